package main

import (
	"fmt"
	"regexp"
	"strings"
)

// filters are ctr's listing filters: each argument is one alternative (an
// item matching any argument is listed), and within an argument clauses
// separated by commas must all hold. A clause is a field path with an
// optional operator and value: `name~=^docker.io/`, `labels."k"==v`,
// `labels.k` (the label is set), `digest!=sha256:...`.
type filters [][]clause

type clause struct {
	path  []string
	op    string // "", "==", "!=", "~="
	value string
	re    *regexp.Regexp
}

// fieldFunc returns an item's value for a field path; ok is false when the
// item has no such field (an unset label).
type fieldFunc[T any] func(item T, path []string) (value string, ok bool)

func parseFilters(args []string) (filters, error) {
	var fs filters
	for _, a := range args {
		var and []clause
		rest := a
		for {
			c, r, err := parseClause(rest)
			if err != nil {
				return nil, usagef("filter %q: %v", a, err)
			}
			and = append(and, c)
			if r == "" {
				break
			}
			rest = r[1:] // past the comma
		}
		fs = append(fs, and)
	}
	return fs, nil
}

// parseClause reads one clause and returns what follows it ("" or ",...").
func parseClause(s string) (clause, string, error) {
	var c clause
	for {
		var part string
		if strings.HasPrefix(s, `"`) {
			end := strings.Index(s[1:], `"`)
			if end < 0 {
				return c, "", fmt.Errorf("unterminated quote")
			}
			part, s = s[1:1+end], s[2+end:]
		} else {
			end := strings.IndexAny(s, ".=!~,")
			if end < 0 {
				end = len(s)
			}
			part, s = s[:end], s[end:]
		}
		if part == "" {
			return c, "", fmt.Errorf("empty field name")
		}
		c.path = append(c.path, part)
		if !strings.HasPrefix(s, ".") {
			break
		}
		s = s[1:]
	}
	for _, op := range []string{"==", "!=", "~="} {
		if strings.HasPrefix(s, op) {
			c.op, s = op, s[len(op):]
			break
		}
	}
	if c.op == "" {
		if s != "" && s[0] != ',' {
			return c, "", fmt.Errorf("want ==, != or ~= after %s", strings.Join(c.path, "."))
		}
		return c, s, nil
	}
	if strings.HasPrefix(s, `"`) {
		end := strings.Index(s[1:], `"`)
		if end < 0 {
			return c, "", fmt.Errorf("unterminated quote")
		}
		c.value, s = s[1:1+end], s[2+end:]
	} else {
		end := strings.IndexByte(s, ',')
		if end < 0 {
			end = len(s)
		}
		c.value, s = s[:end], s[end:]
	}
	if s != "" && s[0] != ',' {
		return c, "", fmt.Errorf("unexpected %q after the value", s)
	}
	if c.op == "~=" {
		re, err := regexp.Compile(c.value)
		if err != nil {
			return c, "", fmt.Errorf("regular expression %q: %v", c.value, err)
		}
		c.re = re
	}
	return c, s, nil
}

// check reports a field path the listing does not know.
func (fs filters) check(known func(path []string) bool) error {
	for _, and := range fs {
		for _, c := range and {
			if !known(c.path) {
				return usagef("filter: unknown field %s", strings.Join(c.path, "."))
			}
		}
	}
	return nil
}

func filterItems[T any](fs filters, items []T, field fieldFunc[T]) []T {
	if len(fs) == 0 {
		return items
	}
	var out []T
	for _, it := range items {
		for _, and := range fs {
			if matchAll(and, it, field) {
				out = append(out, it)
				break
			}
		}
	}
	return out
}

func matchAll[T any](and []clause, it T, field fieldFunc[T]) bool {
	for _, c := range and {
		v, ok := field(it, c.path)
		switch c.op {
		case "":
			ok = ok && v != ""
		case "==":
			ok = ok && v == c.value
		case "!=":
			ok = !ok || v != c.value
		case "~=":
			ok = ok && c.re.MatchString(v)
		}
		if !ok {
			return false
		}
	}
	return true
}

// labelField is the labels.<key> field of any listing.
func labelField(labels map[string]string, path []string) (string, bool) {
	if len(path) != 2 || path[0] != "labels" {
		return "", false
	}
	v, ok := labels[path[1]]
	return v, ok
}

func isLabelPath(path []string) bool { return len(path) == 2 && path[0] == "labels" }
