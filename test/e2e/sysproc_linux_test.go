//go:build e2e && linux

package e2e

import "syscall"

// childSysProcAttr makes the kernel kill a child when the test process dies
// (a timeout, Ctrl-C), so a failed run leaves no operator or emulator behind.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
