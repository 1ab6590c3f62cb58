package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cpuByProcess is the CPU seconds used so far by this process (operator,
// API, Stripe emulator and load generator) and by each of its children
// (kube-apiserver, etcd), by command name.
func cpuByProcess() map[string]float64 {
	self := os.Getpid()
	out := map[string]float64{}
	if s, err := cpuSeconds(self); err == nil {
		out["bench (operator+emulator+load)"] = s
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue
		}
		st := string(b)
		open, end := strings.IndexByte(st, '('), strings.LastIndexByte(st, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(st[end+1:])
		if len(f) < 2 || f[1] != strconv.Itoa(self) {
			continue
		}
		if s, err := cpuSeconds(pid); err == nil {
			out[st[open+1:end]] += s
		}
	}
	return out
}

// cpuSince is the CPU seconds each process used since before.
func cpuSince(before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range cpuByProcess() {
		out[k] = v - before[k]
	}
	return out
}
