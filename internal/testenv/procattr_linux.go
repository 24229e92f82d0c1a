package testenv

import "syscall"

// childAttr puts the child in its own process group (so Stop can kill the
// group) and has the kernel kill it if the test binary dies first.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
