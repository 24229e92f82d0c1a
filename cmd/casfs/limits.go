package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/casfs/casfs/layers"
)

// The unpack limits: a flag on the commands that unpack layers, and an
// environment variable that every command (and the mount daemon) reads
// when the flag is not given.
const (
	flagMaxLayerBytes   = "max-layer-bytes"
	flagMaxImageBytes   = "max-image-bytes"
	flagMaxLayerEntries = "max-layer-entries"
	flagMaxLayerRatio   = "max-layer-ratio"
)

var limitEnv = map[string]string{
	flagMaxLayerBytes:   "CASFS_MAX_LAYER_BYTES",
	flagMaxImageBytes:   "CASFS_MAX_IMAGE_BYTES",
	flagMaxLayerEntries: "CASFS_MAX_LAYER_ENTRIES",
	flagMaxLayerRatio:   "CASFS_MAX_LAYER_RATIO",
}

func limitFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagMaxLayerBytes, Usage: "refuse a layer that unpacks to more than `SIZE` bytes (K, M, G, T suffixes; default 32G)"},
		&cli.StringFlag{Name: flagMaxImageBytes, Usage: "refuse an image whose layers unpack to more than `SIZE` bytes in all (default 32G)"},
		&cli.StringFlag{Name: flagMaxLayerEntries, Usage: "refuse a layer of more than `N` files, directories and links (default 1000000)"},
		&cli.StringFlag{Name: flagMaxLayerRatio, Usage: "refuse a layer that, past 1G, unpacks to more than `N` times its compressed size (default 100)"},
	}
}

// unpackLimits reads the limit flags, or their environment variables.
// Unset limits stay zero: the layers package's defaults.
func unpackLimits(c *cli.Context) (layers.ApplyOptions, error) {
	var l layers.ApplyOptions
	for name, dst := range map[string]*int64{flagMaxLayerBytes: &l.MaxBytes, flagMaxImageBytes: &l.MaxImageBytes, flagMaxLayerEntries: &l.MaxEntries, flagMaxLayerRatio: &l.MaxRatio} {
		v, from := c.String(name), "--"+name
		if v == "" {
			v, from = os.Getenv(limitEnv[name]), limitEnv[name]
		}
		if v == "" {
			continue
		}
		n, err := parseSize(v)
		if err != nil {
			return l, usagef("%s %q: %v", from, v, err)
		}
		*dst = n
	}
	return l, nil
}

// limitFlagGiven reports whether a limit flag is on the command line.
func limitFlagGiven(c *cli.Context) bool {
	for name := range limitEnv {
		if c.IsSet(name) {
			return true
		}
	}
	return false
}

// limitArgs gives limits back as flags, for the background daemon.
func limitArgs(l layers.ApplyOptions) []string {
	var args []string
	for _, f := range []struct {
		name string
		n    int64
	}{{flagMaxLayerBytes, l.MaxBytes}, {flagMaxImageBytes, l.MaxImageBytes}, {flagMaxLayerEntries, l.MaxEntries}, {flagMaxLayerRatio, l.MaxRatio}} {
		if f.n > 0 {
			args = append(args, "--"+f.name, strconv.FormatInt(f.n, 10))
		}
	}
	return args
}

// parseSize reads a positive count with an optional binary suffix: 512,
// 64K, 100M, 32G, 1T (KiB, MiB, ... and a trailing B are accepted too).
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	shift := 0
	if t != "" {
		if i := strings.IndexByte("KMGTP", t[len(t)-1]); i >= 0 {
			shift = 10 * (i + 1)
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("want a positive number with an optional K, M, G, T or P suffix")
	}
	if n > (1<<63-1)>>shift {
		return 0, fmt.Errorf("too large")
	}
	return n << shift, nil
}
