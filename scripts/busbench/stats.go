package main

import (
	"os"
	"strconv"
	"strings"

	"github.com/terroir-ai/terroir/scripts/internal/bench"
)

// machineFacts describes where the numbers were measured.
func machineFacts(e *env) string {
	kafka := bench.KfakeInProcess
	if e.fake == nil {
		kafka = "brokers " + strings.Join(e.brokers, ",")
	}
	return bench.Machine(kafka)
}

// cpuTicks reads the aggregate line of /proc/stat: all ticks and the ticks
// stolen by the hypervisor (time this VM's CPUs wanted to run but the host
// ran something else).
func cpuTicks() (total, steal uint64, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, false
	}
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		if i < 8 { // guest time is already counted in user
			total += v
		}
		if i == 7 {
			steal = v
		}
	}
	return total, steal, true
}
