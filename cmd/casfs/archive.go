package main

import "github.com/urfave/cli/v2"

// imageArchiveCommands are `image export` and `image import`.
func imageArchiveCommands() []*cli.Command { return nil }
