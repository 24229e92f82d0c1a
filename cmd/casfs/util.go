package main

import (
	"errors"
	"os"
	"path/filepath"
)

func dirOf(name string) string { return filepath.Dir(name) }

// unwrapPathErr drops the path of an *os.PathError whose caller already names it.
func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
