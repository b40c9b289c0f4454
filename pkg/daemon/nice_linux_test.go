package daemon

import (
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// TestLowerPriorityCoversEveryThread runs in a child process (a nice
// value cannot be raised back) and checks that every thread, those the
// runtime started before and after the call, runs at the lowered
// priority and in the SCHED_IDLE class.
func TestLowerPriorityCoversEveryThread(t *testing.T) {
	if os.Getenv("TERROIR_NICE_CHILD") == "" {
		runChild(t, "TestLowerPriorityCoversEveryThread", "TERROIR_NICE_CHILD=1")
		return
	}
	if err := lowerPriority(true); err != nil {
		t.Fatal(err)
	}
	// make the runtime start more threads after the call
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			f, _ := os.Open("/proc/self/stat")
			buf := make([]byte, 512)
			_, _ = f.Read(buf)
			f.Close()
		})
	}
	wg.Wait()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		raw, err := os.ReadFile("/proc/self/task/" + task.Name() + "/stat")
		if err != nil {
			continue
		}
		// fields after the command's closing parenthesis: nice is the
		// 19th field of the line, the scheduling policy the 41st
		f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
		if f[16] != "19" || f[38] != "5" {
			t.Errorf("thread %s runs at nice %s, policy %s", task.Name(), f[16], f[38])
		}
	}
}

// runChild runs one test of this package in a child process with env added.
func runChild(t *testing.T, name string, env ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^"+name+"$", "-test.v")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+name) {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
