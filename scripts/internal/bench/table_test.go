package bench

import (
	"strings"
	"testing"
	"time"
)

func TestQuantileNearestRank(t *testing.T) {
	var h Hist
	for i := 100; i >= 1; i-- {
		h = append(h, time.Duration(i)*time.Millisecond)
	}
	s := h.Sorted()
	if h[0] != 100*time.Millisecond {
		t.Fatal("Sorted changed the samples it was given")
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0, 1 * time.Millisecond}, {0.5, 50 * time.Millisecond}, {0.9, 90 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		if got := s.Quantile(c.q); got != c.want {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := Hist(nil).Quantile(0.5); got != 0 {
		t.Errorf("Quantile of no samples = %v, want 0", got)
	}
}

func TestMS(t *testing.T) {
	for d, want := range map[time.Duration]string{
		750 * time.Microsecond:  "0.750 ms",
		20 * time.Millisecond:   "20.00 ms",
		1500 * time.Millisecond: "1500 ms",
	} {
		if got := MS(d); got != want {
			t.Errorf("MS(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestPrintReport(t *testing.T) {
	lat := LatencyRow("lookup", Hist{3 * time.Millisecond, 1 * time.Millisecond, 2 * time.Millisecond})
	lat.Target, lat.Met = "p99 ≤ "+MS(20*time.Millisecond), YesNo(true)
	rows := []Row{
		{Name: "ingest", N: 20000, Value: "49910 records/s", Errors: 1, Comment: "from Run's start"},
		lat,
	}
	var b strings.Builder
	if err := PrintReport(&b, "machine: here", rows); err != nil {
		t.Fatal(err)
	}
	want := `
machine: here

measurement  n      p50       p90       p99       max       value            errors  target          met  
ingest       20000  -         -         -         -         49910 records/s  1       -               -    
lookup       3      2.000 ms  3.000 ms  3.000 ms  3.000 ms  -                0       p99 ≤ 20.00 ms  yes  

notes:
  ingest: from Run's start
`
	if b.String() != want {
		t.Errorf("PrintReport printed\n%s\nwant\n%s", b.String(), want)
	}
}

func TestJSONBody(t *testing.T) {
	b := JSONBody(`{"a":"`, `"}`, 100)
	if len(b) != 100 || !strings.HasPrefix(string(b), `{"a":"the quick`) || !strings.HasSuffix(string(b), `"}`) {
		t.Errorf("JSONBody = %q (%d bytes)", b, len(b))
	}
	if b := JSONBody(`{"a":"`, `"}`, 0); string(b) != `{"a":"t"}` {
		t.Errorf("JSONBody with no room = %q", b)
	}
}

func TestMachine(t *testing.T) {
	m := Machine(KfakeInProcess)
	if !strings.HasPrefix(m, "machine: GOMAXPROCS=") || !strings.HasSuffix(m, " kafka=kfake in process (1 broker)") {
		t.Errorf("Machine = %q", m)
	}
}
