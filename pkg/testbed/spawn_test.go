package testbed

import (
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

func sleeper() *exec.Cmd {
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

func exited(cmd *exec.Cmd, within time.Duration) bool {
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(within):
		_ = cmd.Process.Kill()
		<-done
		return false
	}
}

// The hazard: a child forked on a thread that then ends (as nsenter.Do's
// threads do) is killed by its Pdeathsig. A child started with StartCmd
// outlives any number of ending threads.
func TestStartCmdChildOutlivesEndingThreads(t *testing.T) {
	// A goroutine that happens to run on the main thread wedges it rather
	// than ending it, so the hazard shows on most tries, not all.
	killed := 0
	for range 5 {
		naive := sleeper()
		started := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
			started <- naive.Start()
		}()
		if err := <-started; err != nil {
			t.Fatal(err)
		}
		if exited(naive, 2*time.Second) {
			killed++
		}
	}
	if killed == 0 {
		t.Fatal("no child forked on a thread that ended was killed: the hazard StartCmd avoids is not reproduced")
	}

	good := sleeper()
	if err := StartCmd(good); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		done := make(chan struct{})
		go func() { runtime.LockOSThread(); close(done) }()
		<-done
	}
	if exited(good, time.Second) {
		t.Fatal("a child started with StartCmd was killed when other threads ended")
	}
}
