//go:build e2e && !linux

package e2e

import "os/exec"

// startChild starts cmd. Outside Linux there is no parent-death signal;
// t.Cleanup stops the children.
func startChild(cmd *exec.Cmd) error {
	return cmd.Start()
}
