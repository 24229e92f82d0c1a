package main

import "github.com/urfave/cli/v2"

// gcTopCommands are `lease` and `gc`; gcContentCommands and gcImageCommands
// are the prune subcommands of `content` and `image`.
func gcTopCommands() []*cli.Command     { return nil }
func gcContentCommands() []*cli.Command { return nil }
func gcImageCommands() []*cli.Command   { return nil }
