package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// procStat is one process's line of /proc/<pid>/stat.
type procStat struct {
	pid, ppid int
	name      string
	cpu       time.Duration // user + system
	sys       time.Duration // system
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return procStat{}, false
	}
	f := strings.Fields(s[closing+1:])
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15
	if len(f) < 13 {
		return procStat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return procStat{pid: pid, ppid: ppid, name: s[open+1 : closing],
		cpu: time.Duration(ut+st) * time.Second / userHZ, sys: time.Duration(st) * time.Second / userHZ}, true
}

// tree returns root and every process descended from it.
func tree(root int) []procStat {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]procStat{}
	var top procStat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := readStat(pid)
		if !ok {
			continue
		}
		if pid == root {
			top = st
		}
		children[st.ppid] = append(children[st.ppid], st)
	}
	if top.pid == 0 {
		return nil
	}
	out := []procStat{top}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i].pid]...)
	}
	return out
}

// cpuSample is the CPU time of every process of the stack at one moment,
// by process name (the launcher, which runs the embedded broker, is
// "devstack").
type cpuSample map[string]time.Duration

func sampleCPU(root int) cpuSample {
	s := cpuSample{}
	for _, p := range tree(root) {
		s[p.name] += p.cpu
	}
	return s
}

// perRequest divides the CPU each process used between two samples by n
// requests: "ingress 0.42 ms, …", and the sum.
func perRequest(before, after cpuSample, n int) (string, time.Duration) {
	return perEach(before, after, n, "request")
}

// perEach is perRequest for n of any unit ("second" for the idle stack).
func perEach(before, after cpuSample, n int, unit string) (string, time.Duration) {
	if n == 0 {
		return "no requests answered", 0
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range after {
			if !yield(k) {
				return
			}
		}
	})
	var total time.Duration
	var parts []string
	type use struct {
		name string
		d    time.Duration
	}
	var uses []use
	for _, name := range names {
		d := (after[name] - before[name]) / time.Duration(n)
		total += d
		uses = append(uses, use{name, d})
	}
	slices.SortFunc(uses, func(a, b use) int { return int(b.d - a.d) })
	for _, u := range uses {
		parts = append(parts, fmt.Sprintf("%s %.3f", u.name, float64(u.d)/float64(time.Millisecond)))
	}
	return strings.Join(parts, ", ") + " (ms per " + unit + ")", total
}

// total is the CPU time of every process in the sample.
func (s cpuSample) total() time.Duration {
	var t time.Duration
	for _, d := range s {
		t += d
	}
	return t
}

// waitQuiet waits until the stack uses less than a tenth of a core over
// a second, or for at most limit: after a rate the stack could not keep
// up with, what it still has queued would otherwise be measured with the
// next row. It returns how long it waited.
func waitQuiet(ctx context.Context, root int, limit time.Duration) time.Duration {
	start := time.Now()
	for time.Since(start) < limit && ctx.Err() == nil {
		before := sampleCPU(root).total()
		sleepCtx(ctx, time.Second)
		if sampleCPU(root).total()-before < 100*time.Millisecond {
			break
		}
	}
	return time.Since(start)
}

// kernelUse counts what a process asked of the kernel: read and write
// system calls (/proc/<pid>/io), context switches of all its threads
// (/proc/<pid>/task/*/status) and the CPU time spent in the kernel.
type kernelUse struct {
	syscalls, switches int64
	sys                time.Duration
}

// kernelSample is the kernel use of every process of the stack at one
// moment, by process name.
type kernelSample map[string]kernelUse

func sampleKernel(root int) kernelSample {
	s := kernelSample{}
	for _, p := range tree(root) {
		u := s[p.name]
		u.sys += p.sys
		dir := "/proc/" + strconv.Itoa(p.pid)
		if b, err := os.ReadFile(dir + "/io"); err == nil {
			u.syscalls += field(string(b), "syscr:") + field(string(b), "syscw:")
		}
		tasks, _ := os.ReadDir(dir + "/task")
		for _, t := range tasks {
			if b, err := os.ReadFile(dir + "/task/" + t.Name() + "/status"); err == nil {
				u.switches += field(string(b), "voluntary_ctxt_switches:") + field(string(b), "nonvoluntary_ctxt_switches:")
			}
		}
		s[p.name] = u
	}
	return s
}

// field is the number after the first line starting with name in a
// /proc file of "name: value" lines.
func field(text, name string) int64 {
	for line := range strings.Lines(text) {
		if rest, ok := strings.CutPrefix(line, name); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			return n
		}
	}
	return 0
}

// kernelPerRequest is the stack's system time and the read and write
// system calls and context switches each process made between two
// samples, per request, busiest first: "contentsafety 9.1/6.3, …".
func kernelPerRequest(before, after kernelSample, n int) string {
	return kernelPerEach(before, after, n, "request")
}

// kernelPerEach is kernelPerRequest for n of any unit.
func kernelPerEach(before, after kernelSample, n int, unit string) string {
	if n == 0 {
		return ""
	}
	type use struct {
		name               string
		syscalls, switches float64
	}
	var uses []use
	var sc, sw float64
	var sys time.Duration
	for name, a := range after {
		b := before[name]
		u := use{name, float64(a.syscalls-b.syscalls) / float64(n), float64(a.switches-b.switches) / float64(n)}
		sc, sw = sc+u.syscalls, sw+u.switches
		sys += (a.sys - b.sys) / time.Duration(n)
		uses = append(uses, u)
	}
	slices.SortFunc(uses, func(a, b use) int { return cmp.Compare(b.syscalls+b.switches, a.syscalls+a.switches) })
	parts := []string{fmt.Sprintf("system time %.3f ms; all %.1f/%.1f", float64(sys)/float64(time.Millisecond), sc, sw)}
	for _, u := range uses {
		if u.syscalls+u.switches >= 0.1 {
			parts = append(parts, fmt.Sprintf("%s %.1f/%.1f", u.name, u.syscalls, u.switches))
		}
	}
	return strings.Join(parts, ", ") + " (read+write system calls / context switches per " + unit + ")"
}
