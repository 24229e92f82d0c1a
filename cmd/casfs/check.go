package main

import "github.com/urfave/cli/v2"

// checkTopCommands is `check`.
func checkTopCommands() []*cli.Command { return nil }
