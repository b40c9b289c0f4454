package watch

import (
	"testing"
	"time"
)

func TestRateAndTimeLeft(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	for _, tc := range []struct {
		name      string
		samples   []Progress
		rate      float64
		left      time.Duration
		leftKnown bool
	}{
		{name: "no reading", leftKnown: false},
		{name: "one reading", samples: []Progress{{Total: 100, Completed: 10, At: at(0)}}},
		{name: "steady", samples: []Progress{{Total: 100, Completed: 10, At: at(0)}, {Total: 100, Completed: 30, Failed: 10, At: at(10)}},
			rate: 3, left: 20 * time.Second, leftKnown: true},
		{name: "stalled", samples: []Progress{{Total: 100, Completed: 10, At: at(0)}, {Total: 100, Completed: 10, At: at(10)}}},
		{name: "finished", samples: []Progress{{Total: 4, Completed: 1, At: at(0)}, {Total: 4, Completed: 3, Failed: 1, At: at(2)}},
			rate: 1.5, left: 0, leftKnown: true},
		// The rate looks 30s back (from the last reading at or before then): the slow start falls out of it.
		{name: "window", samples: []Progress{{Total: 1000, At: at(0)}, {Total: 1000, Completed: 10, At: at(30)},
			{Total: 1000, Completed: 100, At: at(45)}, {Total: 1000, Completed: 400, At: at(70)}},
			rate: 9.75, left: 62 * time.Second, leftKnown: true}, // (400-10) lines in the 40s since the last reading before the window
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m Meter
			for _, s := range tc.samples {
				m.Add(s)
			}
			if r := m.Rate(); r != tc.rate {
				t.Errorf("rate = %v, want %v", r, tc.rate)
			}
			left, ok := m.Left()
			if ok != tc.leftKnown || left != tc.left {
				t.Errorf("left = %v %v, want %v %v", left, ok, tc.left, tc.leftKnown)
			}
		})
	}
}

func TestRender(t *testing.T) {
	for _, tc := range []struct {
		p         Progress
		rate      float64
		left      time.Duration
		leftKnown bool
		want      string
	}{
		{Progress{Status: "validating"}, 0, 0, false, "[----------]  0/0 lines  0 failed  0.0 lines/s  --:-- left  validating"},
		{Progress{Status: "in_progress", Total: 100, Completed: 39, Failed: 3}, 12.46, 5 * time.Second, true,
			"[####------]  42/100 lines  3 failed  12.5 lines/s  0:05 left  in_progress"},
		{Progress{Status: "in_progress", Total: 10000, Completed: 1}, 0.1, 27*time.Hour + 46*time.Minute + 39*time.Second, true,
			"[----------]  1/10000 lines  0 failed  0.1 lines/s  27:46:39 left  in_progress"},
		{Progress{Status: "completed", Total: 3, Completed: 3}, 1, 0, true, "[##########]  3/3 lines  0 failed  1.0 lines/s  0:00 left  completed"},
	} {
		if got := Render(tc.p, tc.rate, tc.left, tc.leftKnown, 10); got != tc.want {
			t.Errorf("Render(%+v) =\n%q, want\n%q", tc.p, got, tc.want)
		}
	}
}
