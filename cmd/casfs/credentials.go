package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// credentials splits --user user[:password]; a missing password is read from
// the terminal without echo, never from another process's command line.
func credentials(c *cli.Context, u string) (user, pass string, err error) {
	user, pass, hasPass := strings.Cut(u, ":")
	if user == "" {
		return "", "", usagef("--user: empty user name")
	}
	if hasPass {
		return user, pass, nil
	}
	f, ok := c.App.Reader.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", "", usagef("--user %s has no password and stdin is not a terminal to ask for one", user)
	}
	fmt.Fprintf(c.App.ErrWriter, "Password for %s: ", user)
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(c.App.ErrWriter)
	if err != nil {
		return "", "", fmt.Errorf("read password: %w", err)
	}
	return user, string(b), nil
}
