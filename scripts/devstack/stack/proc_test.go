//go:build unix

package stack

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func shSpec(t *testing.T, out *Output, name, script string) ProcSpec {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal("sh is not on PATH: the process tests run shell scripts as stand-in services")
	}
	return ProcSpec{Name: name, Path: sh, Args: []string{"-c", script}, Dir: t.TempDir(), Env: os.Environ(), Out: out.Writer(name)}
}

func TestGroupStop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		script   string
		wantErr  string
		wantKill bool
	}{
		{name: "clean", script: `trap 'exit 0' TERM; echo up; while :; do sleep 0.05; done`},
		{name: "fails", script: `trap 'exit 3' TERM; echo up; while :; do sleep 0.05; done`, wantErr: "fails exited with exit status 3"},
		{name: "stubborn", script: `trap '' TERM; echo up; while :; do sleep 0.05; done`, wantErr: "stubborn did not stop within", wantKill: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf syncBuffer
			out := NewOutput(&buf, false)
			g := NewGroup(1)
			p, err := g.Add(shSpec(t, out, tc.name, tc.script))
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool { return strings.Contains(buf.String(), "| up") })
			var killed []string
			err = g.Stop(500*time.Millisecond, func(p *Proc) { killed = append(killed, p.Name()) })
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Stop: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Stop error = %v, want it to contain %q", err, tc.wantErr)
			}
			if got := len(killed) == 1 && killed[0] == tc.name; got != tc.wantKill {
				t.Errorf("killed = %v, want kill %v", killed, tc.wantKill)
			}
			if !p.Exited() {
				t.Error("process still running after Stop")
			}
			select {
			case got := <-g.Exited():
				if got != p {
					t.Errorf("Exited delivered %s", got.Name())
				}
			case <-time.After(5 * time.Second):
				t.Error("Exited did not deliver the process")
			}
		})
	}
}

func TestProcOutputPrefixed(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	p, err := StartProc(shSpec(t, NewOutput(&buf, false), "inference", `echo out; echo err >&2; printf partial`))
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if err := p.Err(); err != nil {
		t.Fatalf("exit: %v", err)
	}
	want := "inference     | out\ninference     | err\ninference     | partial\n"
	if got := buf.String(); got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
}
