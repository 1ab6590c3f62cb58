package testenv

import (
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// Logger returns a logger (verbosity 1) that writes to t's log, so lines show
// only for failing tests or with -v. It goes quiet when the test ends:
// managers and servers still stopping must not write to a finished test.
// Call it before starting what logs, so its cleanup runs last.
func Logger(t testing.TB) logr.Logger {
	w := &testLog{t: t}
	t.Cleanup(w.close)
	return funcr.New(w.log, funcr.Options{Verbosity: 1})
}

type testLog struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (w *testLog) log(prefix, args string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(prefix, args)
	}
}

func (w *testLog) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
}
