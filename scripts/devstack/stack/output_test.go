package stack

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

func TestLineWriterPrefixesEveryLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{name: "one line", writes: []string{"hello\n"}, want: []string{"hello"}},
		{name: "final partial line", writes: []string{"a\nb\npartial"}, want: []string{"a", "b", "partial"}},
		{name: "line split across writes", writes: []string{"hel", "lo wo", "rld\nnext", "\n"}, want: []string{"hello world", "next"}},
		{name: "empty lines kept", writes: []string{"\n\nx\n"}, want: []string{"", "", "x"}},
		{name: "carriage returns dropped", writes: []string{"dos\r\nline\r\n"}, want: []string{"dos", "line"}},
		{name: "nothing written", writes: nil, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			w := NewOutput(&buf, false).Writer("ingress")
			for _, s := range tc.writes {
				n, err := w.Write([]byte(s))
				if err != nil || n != len(s) {
					t.Fatalf("Write(%q) = %d, %v", s, n, err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			var want strings.Builder
			for _, l := range tc.want {
				want.WriteString("ingress       | " + l + "\n")
			}
			if got := buf.String(); got != want.String() {
				t.Errorf("output:\n%q\nwant:\n%q", got, want.String())
			}
		})
	}
}

func TestLineWriterFlushesOverlongLine(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w := NewOutput(&buf, false).Writer("batch")
	long := strings.Repeat("x", maxLine+10)
	if _, err := w.Write([]byte(long)); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(buf.String(), "\n"); got != 1 {
		t.Errorf("overlong line written as %d lines before Close, want 1", got)
	}
}

func TestOutputKeepsConcurrentLinesWhole(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	out := NewOutput(&buf, false)
	names := []string{"ingress", "review", "inference"}
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := out.Writer(n)
			for range 200 {
				// Two halves per line, to interleave with the others.
				_, _ = w.Write([]byte("first half "))
				_, _ = w.Write([]byte("second half\n"))
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 600 {
		t.Fatalf("got %d lines, want 600", len(lines))
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, "| first half second half") {
			t.Fatalf("line torn: %q", l)
		}
	}
}

func TestOutputColor(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w := NewOutput(&buf, true).Writer("review")
	_, _ = w.Write([]byte("x\n"))
	got := buf.String()
	if !strings.HasPrefix(got, "\x1b[") || !strings.Contains(got, "review") || !strings.HasSuffix(got, "\x1b[0m x\n") {
		t.Errorf("coloured line = %q", got)
	}
}
