package testenv

import (
	"os/exec"
	"runtime"
	"sync"
)

// Pdeathsig fires when the thread that forked the child exits, not the
// process. Go only ends a thread when a goroutine locked to it returns, so a
// registry started from such a goroutine (a namespace test, say) would die
// with it. Starting every child from one goroutine that stays locked to its
// thread for the life of the test binary avoids that (go.dev/issue/27505).
// The kernel here did not show the early kill in a try, so no test pins it;
// the cost of the guard is one parked thread.
var (
	spawnOnce sync.Once
	spawnReq  chan spawnCall
)

type spawnCall struct {
	cmd  *exec.Cmd
	done chan error
}

func startChild(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReq = make(chan spawnCall)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread must outlive every child
			for c := range spawnReq {
				c.done <- c.cmd.Start()
			}
		}()
	})
	c := spawnCall{cmd: cmd, done: make(chan error, 1)}
	spawnReq <- c
	return <-c.done
}
