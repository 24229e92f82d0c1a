package testenv

import (
	"os"
	"os/exec"
)

// BuildTags are the tags make build passes (BUILD_TAGS in the Makefile).
const BuildTags = "urfave_cli_no_docs"

// CasfsBuild returns the go build command that writes the casfs binary to
// out from the module rooted at moduleDir, configured as make build does
// (no cgo, BuildTags) so that it reuses the build cache make lint filled;
// race builds it with the race detector instead, which needs cgo.
func CasfsBuild(moduleDir, out string, race bool) *exec.Cmd {
	args := []string{"build", "-tags", BuildTags, "-o", out}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./cmd/casfs")...)
	cmd.Dir = moduleDir
	if !race {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	return cmd
}
