package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/terroir-ai/terroir/scripts/internal/bench"
)

// echoEnv, when set to an address, makes this program an echo peer of
// loopbackFloor instead of a bench: it connects there and answers every
// message with itself.
const echoEnv = "STACKBENCH_ECHO_PEER"

const floorMessage = 512

func echoPeer(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	buf := make([]byte, floorMessage)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil
		}
		if _, err := c.Write(buf); err != nil {
			return nil
		}
	}
}

// loopbackFloor measures what the stack's path is made of, without the
// stack: one message sent over loopback TCP to another Go process, idle
// between messages, that reads it and answers. It is the CPU the
// receiving process spends per message (being woken, reading, writing),
// at rate messages per second. Every hop of the stack costs a few such
// messages in each process it crosses.
func loopbackFloor(rate int, d time.Duration) (bench.Row, error) {
	name := fmt.Sprintf("loopback floor, %d messages/s", rate)
	self, err := os.Executable()
	if err != nil {
		return bench.Row{}, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return bench.Row{}, err
	}
	defer l.Close()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), echoEnv+"="+l.Addr().String(), "GOMAXPROCS=1")
	if err := cmd.Start(); err != nil {
		return bench.Row{}, err
	}
	defer cmd.Wait()
	l.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
	c, err := l.Accept()
	if err != nil {
		cmd.Process.Kill()
		return bench.Row{}, err
	}
	defer c.Close()
	buf := make([]byte, floorMessage)
	n := int(d.Seconds() * float64(rate))
	var lat bench.Hist
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	before := taskCPU(cmd.Process.Pid)
	for range n {
		<-tick.C
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			return bench.Row{}, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return bench.Row{}, err
		}
		lat = append(lat, time.Since(start))
	}
	per := (taskCPU(cmd.Process.Pid) - before) / time.Duration(n)
	return bench.Row{Name: name, N: n, Lat: lat.Sorted(),
		Value:   fmt.Sprintf("%.0f µs CPU per message in the receiver", float64(per)/float64(time.Microsecond)),
		Comment: fmt.Sprintf("a %d-byte message to an idle Go process on one P, which reads it and answers (latency is the round trip)", floorMessage)}, nil
}

// taskCPU is the time every thread of pid has run, from the scheduler's
// nanosecond counters (/proc/<pid>/task/*/schedstat): /proc/<pid>/stat
// counts in hundredths of a second, too coarse for a few thousand
// messages.
func taskCPU(pid int) time.Duration {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, _ := os.ReadDir(dir)
	var t time.Duration
	for _, task := range tasks {
		b, err := os.ReadFile(dir + task.Name() + "/schedstat")
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			t += time.Duration(ns)
		}
	}
	return t
}
