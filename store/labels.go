package store

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/casfs/casfs/errdefs"
)

// checkLabels refuses label keys and values with control characters (a
// newline in a value would make a fake row of `content ls`) and empty keys.
func checkLabels(labels map[string]string) error {
	for k, v := range labels {
		if k == "" {
			return fmt.Errorf("label with an empty key: %w", errdefs.ErrInvalidArgument)
		}
		for _, s := range []string{k, v} {
			if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
				return fmt.Errorf("label %s holds a control character (%s): %w", strconv.Quote(k), strconv.QuoteRune(rune(s[i])), errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}

// editLabels applies set, then del, to labels (which may be nil) and
// returns the result, nil when no label is left.
func editLabels(labels, set map[string]string, del []string) map[string]string {
	if labels == nil {
		labels = map[string]string{}
	}
	for k, v := range set {
		labels[k] = v
	}
	for _, k := range del {
		delete(labels, k)
	}
	if len(labels) == 0 {
		return nil
	}
	return labels
}
