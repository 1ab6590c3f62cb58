//go:build e2e

package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/md-platform/paytoview-operator/internal/testenv"
)

// process is a child process of the suite, its output going to a file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once it has exited and been reaped
	err     error         // its exit status, once done is closed
}

// startProcess starts bin with args and env (the whole environment), its
// stdout and stderr appended to logPath.
func startProcess(name, logPath, bin string, args, env []string) (*process, error) {
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the log of %s: %w", name, err)
	}
	// The child writes to its own descriptor; ours is not needed after Start.
	defer out.Close()
	fmt.Fprintf(out, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	if err := startChild(cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to end (SIGTERM), as the kubelet does, and kills it
// if it has not within grace.
func (p *process) stop(grace time.Duration) error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signalling %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	p.kill()
	return fmt.Errorf("%s did not stop within %s of SIGTERM and was killed", p.name, grace)
}

// kill ends the process at once (SIGKILL) and waits until it is reaped.
func (p *process) kill() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// waitForLine waits until the process's log has a line starting with
// prefix and returns the rest of that line.
func (p *process) waitForLine(prefix string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if rest, ok := findLine(p.logPath, prefix); ok {
			return rest, nil
		}
		if p.exited() {
			return "", fmt.Errorf("%s exited (%w) before printing %q", p.name, p.err, prefix)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not print %q within %s", p.name, prefix, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func findLine(path, prefix string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			return rest, true
		}
	}
	return "", false
}

// logContains reports whether a log file holds s.
func logContains(path, s string) bool {
	data, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(data), s)
}

// dumpLog prints the end of a log file into the test's output.
func dumpLog(t *testing.T, path string) {
	const maxLines = 400
	data, err := os.ReadFile(path)
	if err != nil {
		t.Logf("reading %s: %v", path, err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > maxLines {
		t.Logf("----- %s (last %d of %d lines) -----", filepath.Base(path), maxLines, len(lines))
		lines = lines[len(lines)-maxLines:]
	} else {
		t.Logf("----- %s -----", filepath.Base(path))
	}
	t.Log("\n" + strings.Join(lines, "\n"))
}

// buildBinaries builds the manager and the Stripe emulator from this
// repository into dir, once per run: the test drives the real binaries.
func buildBinaries(t *testing.T, dir string) (manager, stripeEmulator string) {
	t.Helper()
	manager, stripeEmulator = filepath.Join(dir, "manager"), filepath.Join(dir, "stripe-emulator")
	for _, b := range []struct{ out, pkg string }{{manager, "."}, {stripeEmulator, "./hack/stripe-emulator"}} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Dir = testenv.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build -o %s %s: %v\n%s", b.out, b.pkg, err, out)
		}
	}
	return manager, stripeEmulator
}

// handedOut are the addresses freeAddr has returned: the kernel may give a
// port that was just closed again, and two slots must never share one.
var handedOut sync.Map

// freeAddr returns a loopback address with a port nobody listens on now and
// that it has not returned before.
func freeAddr(t *testing.T) string {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		if _, taken := handedOut.LoadOrStore(addr, true); !taken {
			return addr
		}
	}
}

// childEnv is this process's environment without anything that would
// configure the operator or the emulator behind the test's back, plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PAYTOVIEW_") || strings.HasPrefix(name, "STRIPE_") ||
			name == "KUBECONFIG" || name == "POD_NAMESPACE" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}
