package testbed

import (
	"os/exec"
	"runtime"
	"sync"
)

// A child started with Pdeathsig gets its signal when the *thread* that
// forked it exits, not when the process does. Go ends the thread of a
// goroutine that exits while locked to it, and nsenter.Do does exactly
// that on purpose (a thread left in another network namespace must not be
// reused), so a child forked from an ordinary goroutine dies whenever the
// thread it was forked on is later picked by nsenter.Do — at random.
// Every child is therefore forked from one thread, locked for the life of
// the process, that does nothing else.
var (
	forkerOnce sync.Once
	forks      chan func()
)

// StartCmd starts cmd (cmd.Start) from the forker thread.
func StartCmd(cmd *exec.Cmd) error {
	forkerOnce.Do(func() {
		forks = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for f := range forks {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	forks <- func() { errc <- cmd.Start() }
	return <-errc
}
