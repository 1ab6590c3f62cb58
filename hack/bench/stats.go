package main

import (
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Latency summarises one set of timed operations. Durations are in
// milliseconds, as the table prints them.
type Latency struct {
	Count  int     `json:"count"`
	Errors int     `json:"errors"`
	P50ms  float64 `json:"p50_ms"`
	P95ms  float64 `json:"p95_ms"`
	P99ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
	MeanMs float64 `json:"mean_ms"`
	// PerSecond is successful operations per second of wall time.
	PerSecond float64 `json:"per_second"`
	WallMs    float64 `json:"wall_ms"`
}

// summarise computes percentiles (nearest rank) of ds.
func summarise(ds []time.Duration, errs int, wall time.Duration) Latency {
	l := Latency{Count: len(ds), Errors: errs, WallMs: ms(wall)}
	if len(ds) == 0 {
		return l
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	rank := func(q float64) time.Duration {
		i := int(math.Ceil(q*float64(len(sorted)))) - 1
		return sorted[max(0, min(i, len(sorted)-1))]
	}
	var sum time.Duration
	for _, d := range sorted {
		sum += d
	}
	l.P50ms, l.P95ms, l.P99ms = ms(rank(0.50)), ms(rank(0.95)), ms(rank(0.99))
	l.MaxMs = ms(sorted[len(sorted)-1])
	l.MeanMs = ms(sum / time.Duration(len(sorted)))
	if wall > 0 {
		l.PerSecond = float64(len(ds)) / wall.Seconds()
	}
	return l
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// load runs op total times from concurrency workers and times each call.
// op gets the call's index; a call that returns an error is counted, not
// timed. It stops early when ctx ends.
func load(ctx context.Context, concurrency, total int, op func(ctx context.Context, i int) error) (Latency, error) {
	return loadUntil(ctx, concurrency, total, time.Time{}, op)
}

// loadFor runs op from concurrency workers until d has passed; calls in
// flight then finish and count.
func loadFor(ctx context.Context, concurrency int, d time.Duration, op func(ctx context.Context, i int) error) (Latency, error) {
	return loadUntil(ctx, concurrency, math.MaxInt32, time.Now().Add(d), op)
}

func loadUntil(ctx context.Context, concurrency, total int, deadline time.Time, op func(ctx context.Context, i int) error) (Latency, error) {
	var (
		next     atomic.Int64
		mu       sync.Mutex
		ds       = make([]time.Duration, 0, min(total, 1<<20))
		errs     int
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && (deadline.IsZero() || time.Now().Before(deadline)) {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				t0 := time.Now()
				err := op(ctx, i)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					errs++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					ds = append(ds, d)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	l := summarise(ds, errs, time.Since(start))
	if err := ctx.Err(); err != nil {
		return l, err
	}
	return l, firstErr
}
