//go:build e2e && !linux

package e2e

import "syscall"

// childSysProcAttr has no parent-death signal outside Linux; t.Cleanup
// stops the children.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{}
}
