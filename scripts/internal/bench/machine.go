package bench

import (
	"fmt"
	"os"
	"runtime"
	"strings"
)

// KfakeInProcess is how Machine names the in-process cluster StartKfake
// starts.
const KfakeInProcess = "kfake in process (1 broker)"

// Machine describes where the numbers were measured: the CPUs Go sees and
// uses, the CPU model, the Go version and platform, and the Kafka cluster.
func Machine(kafka string) string {
	return fmt.Sprintf("machine: GOMAXPROCS=%d NumCPU=%d cpu=%q %s %s/%s kafka=%s",
		runtime.GOMAXPROCS(0), runtime.NumCPU(), CPUModel(), runtime.Version(), runtime.GOOS, runtime.GOARCH, kafka)
}

// CPUModel reads the first "model name" of /proc/cpuinfo.
func CPUModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
