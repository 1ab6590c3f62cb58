//go:build e2e && linux

package e2e

import (
	"os/exec"
	"runtime"
	"syscall"
)

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

var spawnRequests = make(chan spawnRequest)

func init() { go spawner() }

// spawner starts every child from one OS thread that lives as long as the
// test binary: the parent-death signal fires when the thread that forked a
// child exits, not the process, and a locked goroutine that never returns
// keeps its thread.
func spawner() {
	runtime.LockOSThread()
	for req := range spawnRequests {
		req.done <- req.cmd.Start()
	}
}

// startChild starts cmd so that the kernel kills it when the test binary
// dies (a timeout, Ctrl-C): a failed run leaves no operator or emulator
// behind.
func startChild(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done := make(chan error, 1)
	spawnRequests <- spawnRequest{cmd: cmd, done: done}
	return <-done
}
