package main

import "github.com/urfave/cli/v2"

// snapshotTopCommands is `snapshot`; snapshotImageCommands are
// `image mount`, `image unmount` and `image check`.
func snapshotTopCommands() []*cli.Command   { return nil }
func snapshotImageCommands() []*cli.Command { return nil }
