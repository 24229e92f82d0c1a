package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// buildVersion is set by the linker (-X main.buildVersion=...) for releases;
// otherwise the version comes from the module and VCS build information.
var buildVersion string

func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
		if s.Key == "vcs.modified" && s.Value == "true" {
			v += "-dirty"
		}
	}
	return v
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print casfs's version and the Go toolchain that built it",
		Action: func(c *cli.Context) error {
			if err := wantArgs(c, 0, 0); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "casfs %s (%s, %s/%s)\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}

// addAliases gives every command the other names ctr, docker and nerdctl
// users type: list for ls, remove and del for rm.
func addAliases(cmds []*cli.Command) {
	for _, c := range cmds {
		for _, a := range map[string][]string{"ls": {"list"}, "rm": {"remove", "del"}, "image": {"images", "i"}}[c.Name] {
			if !c.HasName(a) {
				c.Aliases = append(c.Aliases, a)
			}
		}
		addAliases(c.Subcommands)
	}
}
