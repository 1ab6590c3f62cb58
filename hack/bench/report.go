package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Targets of the benchmarks.
const (
	targetCreateRatio      = 2.5  // create p50 / physical limit p50
	targetCreateP99ms      = 100  // at concurrency 32
	targetCreatesPerSecond = 100  // at concurrency 32
	targetWebhooksPerSec   = 300  //
	targetWebhookP99ms     = 50   //
	targetReadP99ms        = 10   // list and access with 100k cached
	targetForwardAuthRPS   = 5000 //
	targetWritesReturning  = 4    //
	targetWritesNew        = 6    //
	targetBytesPerPurchase = 2048 // operator RSS growth per cached Purchase
)

func ratio(create, limit Latency) float64 {
	if limit.P50ms == 0 {
		return 0
	}
	return create.P50ms / limit.P50ms
}

func checks(r Results, o options) []Check {
	var cs []Check
	add := func(name string, v float64, target string, met bool) {
		cs = append(cs, Check{Name: name, Value: v, Target: target, Met: met})
	}
	for _, level := range o.levels {
		k := strconv.Itoa(level)
		rt := ratio(r.Create[k], r.Limit[k])
		add("create p50 / physical limit p50, concurrency "+k, rt, fmt.Sprintf("≤ %.1f", targetCreateRatio), rt <= targetCreateRatio)
	}
	top := strconv.Itoa(o.levels[len(o.levels)-1])
	c := r.Create[top]
	add("create p99 (ms), concurrency "+top, c.P99ms, fmt.Sprintf("≤ %d", targetCreateP99ms), c.P99ms <= targetCreateP99ms)
	add("creates per second, concurrency "+top, c.PerSecond, fmt.Sprintf("≥ %d", targetCreatesPerSecond), c.PerSecond >= targetCreatesPerSecond)
	w := r.Webhooks
	add("webhooks verified + applied per second", w.PerSecond, fmt.Sprintf("≥ %d", targetWebhooksPerSec), w.PerSecond >= targetWebhooksPerSec)
	add("webhook p99 (ms)", w.P99ms, fmt.Sprintf("< %d", targetWebhookP99ms), w.P99ms < targetWebhookP99ms)
	add("apiserver writes per purchase, returning user", r.WritesReturn.PerPurchase, fmt.Sprintf("≤ %d", targetWritesReturning), r.WritesReturn.PerPurchase <= targetWritesReturning)
	add("apiserver writes per purchase, new user", r.WritesNew.PerPurchase, fmt.Sprintf("≤ %d", targetWritesNew), r.WritesNew.PerPurchase <= targetWritesNew)
	if r.Reads.Purchases > 0 {
		n := strconv.Itoa(r.Reads.Purchases)
		add("list p99 (ms), "+n+" cached", r.Reads.List.P99ms, fmt.Sprintf("< %d", targetReadP99ms), r.Reads.List.P99ms < targetReadP99ms)
		add("access p99 (ms), "+n+" cached", r.Reads.Access.P99ms, fmt.Sprintf("< %d", targetReadP99ms), r.Reads.Access.P99ms < targetReadP99ms)
		add("forward-auth checks per second, "+n+" cached", r.Reads.ForwardAuth.PerSecond, fmt.Sprintf("≥ %d", targetForwardAuthRPS), r.Reads.ForwardAuth.PerSecond >= targetForwardAuthRPS)
	}
	for _, m := range r.Memory {
		if m.Purchases == 0 {
			continue
		}
		add(fmt.Sprintf("operator RSS bytes per cached Purchase, %d cached", m.Purchases), m.RSSPerPurchase, fmt.Sprintf("≤ %d", targetBytesPerPurchase), m.RSSPerPurchase <= targetBytesPerPurchase)
	}
	return cs
}

func printTable(out io.Writer, r Results, o options) {
	fmt.Fprintf(out, "\npaytoview-operator benchmarks — %s, %s, %d CPUs, kube-apiserver %s, etcd %s\n\n", r.Date, r.GoVersion, r.CPUs, r.Kubernetes, r.Etcd)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "create (ms)\tn\terr\tp50\tp95\tp99\tper s\tlimit p50\tlimit p95\tlimit p99\tp50 ratio\t")
	for _, level := range o.levels {
		k := strconv.Itoa(level)
		c, l := r.Create[k], r.Limit[k]
		fmt.Fprintf(tw, "concurrency %s\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.0f\t%.1f\t%.1f\t%.1f\t%.2f×\t\n",
			k, c.Count, c.Errors, c.P50ms, c.P95ms, c.P99ms, c.PerSecond, l.P50ms, l.P95ms, l.P99ms, ratio(c, l))
	}
	f := r.FirstPurchase
	fmt.Fprintf(tw, "first purchase, new user (c=8)\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.0f\t\t\t\t\t\n", f.Count, f.Errors, f.P50ms, f.P95ms, f.P99ms, f.PerSecond)
	w := r.Webhooks
	fmt.Fprintf(tw, "webhooks (c=32)\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.0f\t\t\t\t\t\n", w.Count, w.Errors, w.P50ms, w.P95ms, w.P99ms, w.PerSecond)
	if r.Reads.Purchases > 0 {
		for _, row := range []struct {
			name string
			l    Latency
		}{{"list (c=8)", r.Reads.List}, {"access (c=8)", r.Reads.Access}, {"forward-auth (c=32)", r.Reads.ForwardAuth}} {
			fmt.Fprintf(tw, "%s, %d cached\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.0f\t\t\t\t\t\n", row.name, r.Reads.Purchases, row.l.Count, row.l.Errors, row.l.P50ms, row.l.P95ms, row.l.P99ms, row.l.PerSecond)
		}
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "\nwebhook outcomes: %s\n", formatMap(w.Outcomes, "%s=%d"))
	fmt.Fprintf(out, "purchases at the end: %s\n", formatMap(r.FinalPhases, "%s=%d"))
	fmt.Fprintf(out, "CPU ms per create (highest concurrency): %s\n", formatMap(r.CPUPerCreate, "%s %.2f"))
	fmt.Fprintf(out, "CPU ms per webhook: %s\n", formatMap(r.CPUPerWebhook, "%s %.2f"))

	fmt.Fprintln(out, "\napiserver writes per purchase (create → Completed):")
	for _, row := range []struct {
		name string
		w    Writes
	}{{"new user", r.WritesNew}, {"returning user", r.WritesReturn}} {
		fmt.Fprintf(out, "  %-15s %.2f writes, %.2f uncached reads  (%s)\n", row.name, row.w.PerPurchase, row.w.ReadsPerPurchase, formatMap(row.w.ByRequest, "%s %.2f"))
	}

	if len(r.Memory) > 0 {
		fmt.Fprintf(out, "\nmemory (operator process; Purchase object %d bytes as JSON):\n", r.ObjectBytes)
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "purchases\tRSS MiB\tlive heap MiB\tRSS B/purchase\theap B/purchase\tetcd B/purchase\tready s\tsettled s\tseeded/s\t")
		for _, m := range r.Memory {
			fmt.Fprintf(tw, "%d\t%.1f\t%.0f\t%.0f\t%.0f\t%.0f\t%.1f\t%.0f\t%.0f\t\n", m.Purchases, float64(m.RSSBytes)/(1<<20), float64(m.LiveHeapBytes)/(1<<20),
				m.RSSPerPurchase, m.HeapPerPurchase, m.EtcdBytesPerPurchase, m.ReadySeconds, m.SettledSeconds, m.SeedPerSecond)
		}
		_ = tw.Flush()
	}

	fmt.Fprintln(out, "\ntargets:")
	for _, c := range r.Checks {
		mark := "met "
		if !c.Met {
			mark = "MISS"
		}
		fmt.Fprintf(out, "  %s  %-58s %10.2f  (target %s)\n", mark, c.Name, c.Value, c.Target)
	}
}

// formatMap prints m's entries in key order, each with format (key, value).
func formatMap[V int | float64](m map[string]V, format string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, format, k, m[k])
	}
	return b.String()
}
