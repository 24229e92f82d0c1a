package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

var (
	quietFlag  = &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only identifiers"}
	formatFlag = &cli.StringFlag{Name: "format", Value: "table", Usage: "output format: table or json"}
)

// jsonFormatFlag is --format on commands that print JSON only (info), so
// that the flag scripts pass to every command is accepted there too.
var jsonFormatFlag = &cli.StringFlag{Name: "format", Value: "json", Usage: "output format: json (the only one)"}

func jsonFormat(c *cli.Context) error {
	if f := c.String("format"); f != "json" {
		return usagef("--format %q: this command prints json only", f)
	}
	return nil
}

// outputFormat validates --format.
func outputFormat(c *cli.Context) (string, error) {
	f := c.String("format")
	if f != "table" && f != "json" {
		return "", usagef("--format %q: want table or json", f)
	}
	return f, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer, header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	return tw
}

func row(tw *tabwriter.Writer, cols ...any) {
	s := make([]string, len(cols))
	for i, c := range cols {
		s[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(tw, strings.Join(s, "\t"))
}

// formatLabels prints labels as sorted k=v pairs, "-" when none.
func formatLabels(l map[string]string) string {
	if len(l) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return strings.Join(parts, ",")
}

// humanSize prints bytes the way ctr does (1.5 MiB).
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// age prints how long ago t was, coarsely.
func age(t time.Time) string {
	d := time.Since(t)
	switch {
	case t.IsZero():
		return "-"
	case d < time.Minute:
		return fmt.Sprintf("%d seconds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d minutes", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d hours", int(d.Hours()))
	default:
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	}
}

// listing prints a list the three ways every ls command offers: ids only
// (-q), JSON (--format json, [] when empty), or a table.
type listing[T any] struct {
	header []string
	id     func(T) string
	row    func(T) []any
}

func (l listing[T]) print(c *cli.Context, format string, items []T) error {
	switch {
	case c.Bool("quiet"):
		for _, it := range items {
			fmt.Fprintln(c.App.Writer, l.id(it))
		}
		return nil
	case format == "json":
		if items == nil {
			items = []T{}
		}
		return printJSON(c.App.Writer, items)
	}
	tw := newTable(c.App.Writer, l.header...)
	for _, it := range items {
		row(tw, l.row(it)...)
	}
	return tw.Flush()
}
