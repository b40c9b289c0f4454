package detect

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/redistest"
)

// env runs a detector with the default rules over a Kafka cluster, with a
// Redis server per geography.
type env struct {
	bus *bus.Bus
	rdb map[string]*redis.Client
	d   *Detector
	now time.Time // the detector's clock; signals are stamped around it

	mu        sync.Mutex
	published map[string]int
	handled   map[string]int
	opened    []Case
}

func start(t *testing.T) *env {
	t.Helper()
	c := bustest.New(t)
	e := &env{
		bus:       c.Bus(t, bustest.Options{Geos: []string{"eu", "us"}}),
		rdb:       map[string]*redis.Client{"eu": redistest.Client(t), "us": redistest.Client(t)},
		now:       time.Now().UTC().Truncate(time.Millisecond),
		published: map[string]int{},
		handled:   map[string]int{},
	}
	d, err := New(Config{
		Bus: e.bus, Redis: e.rdb, Geos: []string{"eu", "us"},
		Now: e.clock,
		OnOpen: func(_ context.Context, c Case) {
			e.mu.Lock()
			e.opened = append(e.opened, c)
			e.mu.Unlock()
		},
		Log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	if err != nil {
		t.Fatal(err)
	}
	d.handled = func(geo string, _ events.SafetySignal) {
		e.mu.Lock()
		e.handled[geo]++
		e.mu.Unlock()
	}
	e.d = d
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return e
}

// publish sends signals to geo and waits until the detector has judged
// them all.
func (e *env) publish(t *testing.T, geo string, sigs ...events.SafetySignal) {
	t.Helper()
	sends := make([]*bus.Sending, len(sigs))
	for i, s := range sigs {
		s.HomeGeo = geo
		sends[i] = e.bus.PublishAsync(t.Context(), geo, bus.StreamSafetySignals, bus.Meta{Key: s.RequestID}, s)
	}
	if err := bus.WaitAll(sends...); err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	e.published[geo] += len(sigs)
	want := e.published[geo]
	e.mu.Unlock()
	waitFor(t, fmt.Sprintf("%d signals of %s judged", want, geo), func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.handled[geo] >= want
	})
}

// clock is the detector's clock; tick moves it.
func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) tick(d time.Duration) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
	return e.now
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) openedCount(resource string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, c := range e.opened {
		if c.Resource == resource {
			n++
		}
	}
	return n
}

// casesOf returns geo's cases of resource, open first, newest first.
func (e *env) casesOf(t *testing.T, geo, resource string) []Case {
	t.Helper()
	all, err := e.d.Cases(t.Context(), geo, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []Case
	for _, c := range all {
		if c.Resource == resource {
			out = append(out, c)
		}
	}
	return out
}

func (e *env) flagged(t *testing.T, geo, requestID string) string {
	t.Helper()
	id, ok, err := e.d.Flagged(t.Context(), geo, requestID)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return ""
	}
	return id
}

func contentHash(label string) string {
	h := sha256.Sum256([]byte(label))
	return hex.EncodeToString(h[:])
}

// signal is an unremarkable prompt signal.
func signal(resource, req string, at time.Time) events.SafetySignal {
	safe := events.CategoryResult{Severity: events.SeveritySafe}
	return events.SafetySignal{
		RequestID: req, Resource: resource, Deployment: "chat", Direction: events.DirectionPrompt,
		Categories:  events.Categories{Hate: safe, Sexual: safe, Violence: safe, SelfHarm: safe},
		Detections:  events.Detections{Profanity: &events.Detection{}},
		ContentHash: contentHash(req), At: at,
	}
}

func severe(resource, req string, at time.Time, sev events.Severity) events.SafetySignal {
	s := signal(resource, req, at)
	s.Categories.Violence.Severity = sev
	return s
}

func jailbreak(resource, req string, at time.Time, detected bool) events.SafetySignal {
	s := signal(resource, req, at)
	s.Detections.Jailbreak = &events.Detection{Detected: detected}
	return s
}

func blocked(resource, req string, at time.Time, content string) events.SafetySignal {
	s := signal(resource, req, at)
	s.Filtered, s.ContentHash = true, contentHash(content)
	s.BlocklistHits = []string{"bl_1"}
	return s
}

func completion(resource, req string, at time.Time, filtered bool) events.SafetySignal {
	s := signal(resource, req, at)
	s.Direction, s.Filtered = events.DirectionCompletion, filtered
	return s
}

func ids(sigs []events.SafetySignal) []string {
	var out []string
	for _, s := range sigs {
		if !slices.Contains(out, s.RequestID) {
			out = append(out, s.RequestID)
		}
	}
	slices.Sort(out)
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestRulesFireExactlyAtTheirThreshold(t *testing.T) {
	e := start(t)
	at := func(i int) time.Time { return e.clock().Add(time.Duration(i) * time.Second) }
	tests := []struct {
		rule      string
		threshold int
		hit       func(res string, i int) events.SafetySignal
		miss      func(res string, i int) events.SafetySignal
	}{
		{"severe_content", 5,
			func(res string, i int) events.SafetySignal {
				return severe(res, fmt.Sprintf("%s-hit-%d", res, i), at(i), []events.Severity{events.SeverityMedium, events.SeverityHigh}[i%2])
			},
			func(res string, i int) events.SafetySignal {
				return severe(res, fmt.Sprintf("%s-miss-%d", res, i), at(i), events.SeverityLow)
			}},
		{"jailbreak_attempts", 3,
			func(res string, i int) events.SafetySignal {
				return jailbreak(res, fmt.Sprintf("%s-hit-%d", res, i), at(i), true)
			},
			func(res string, i int) events.SafetySignal {
				return jailbreak(res, fmt.Sprintf("%s-miss-%d", res, i), at(i), false)
			}},
		{"recurring_blocked_content", 3,
			func(res string, i int) events.SafetySignal {
				return blocked(res, fmt.Sprintf("%s-hit-%d", res, i), at(i), "the same text")
			},
			func(res string, i int) events.SafetySignal {
				if i%2 == 0 { // the same content, not blocked
					s := signal(res, fmt.Sprintf("%s-miss-%d", res, i), at(i))
					s.ContentHash = contentHash("the same text")
					return s
				}
				return blocked(res, fmt.Sprintf("%s-miss-%d", res, i), at(i), fmt.Sprintf("other text %d", i))
			}},
		{"filtered_output_burst", 5,
			func(res string, i int) events.SafetySignal {
				return completion(res, fmt.Sprintf("%s-hit-%d", res, i), at(i), true)
			},
			func(res string, i int) events.SafetySignal {
				if i%2 == 0 {
					return completion(res, fmt.Sprintf("%s-miss-%d", res, i), at(i), false)
				}
				return blocked(res, fmt.Sprintf("%s-miss-%d", res, i), at(i), fmt.Sprintf("blocked prompt %d", i))
			}},
	}
	for _, tc := range tests {
		t.Run(tc.rule, func(t *testing.T) {
			res := "res-" + tc.rule
			var hits, misses []events.SafetySignal
			for i := range 2 * tc.threshold {
				misses = append(misses, tc.miss(res, i))
			}
			for i := range tc.threshold {
				hits = append(hits, tc.hit(res, i))
			}
			e.publish(t, "eu", append(slices.Clone(misses), hits[:tc.threshold-1]...)...)
			if cs := e.casesOf(t, "eu", res); len(cs) != 0 {
				t.Fatalf("%d cases below the threshold", len(cs))
			}
			for _, s := range append(slices.Clone(misses), hits...) {
				if id := e.flagged(t, "eu", s.RequestID); id != "" {
					t.Fatalf("request %s flagged below the threshold", s.RequestID)
				}
			}

			e.publish(t, "eu", hits[tc.threshold-1])
			cs := e.casesOf(t, "eu", res)
			if len(cs) != 1 {
				t.Fatalf("%d cases at the threshold, want 1", len(cs))
			}
			c := cs[0]
			if c.Rule != tc.rule || c.Geo != "eu" || c.Status != StatusOpen || c.Hits != tc.threshold ||
				!c.OpenedAt.Equal(e.clock()) || !c.UpdatedAt.Equal(e.clock()) || !strings.HasPrefix(c.ID, "case_") {
				t.Fatalf("case %+v", c)
			}
			if got := sorted(c.RequestIDs); !slices.Equal(got, ids(hits)) {
				t.Fatalf("case holds %v, want %v", got, ids(hits))
			}
			for _, s := range hits {
				if id := e.flagged(t, "eu", s.RequestID); id != c.ID {
					t.Fatalf("hit %s flagged by %q, want %s", s.RequestID, id, c.ID)
				}
			}
			for _, s := range misses {
				if id := e.flagged(t, "eu", s.RequestID); id != "" {
					t.Fatalf("non-hit %s flagged", s.RequestID)
				}
			}
			if n := e.openedCount(res); n != 1 {
				t.Fatalf("OnOpen called %d times, want 1", n)
			}
			got, err := e.d.Case(t.Context(), "eu", c.ID)
			if err != nil || got.ID != c.ID || len(got.RequestIDs) != tc.threshold {
				t.Fatalf("Case = %+v, %v", got, err)
			}
		})
	}
	if _, ok, err := e.d.Flagged(t.Context(), "eu", "never-seen"); ok || err != nil {
		t.Fatalf("an unknown request is flagged: %v %v", ok, err)
	}
}

func TestHitsOutsideTheWindowDoNotCount(t *testing.T) {
	e := start(t) // jailbreak_attempts: 3 in 10 minutes
	res := "res-window"
	jb := func(name string, offset time.Duration) events.SafetySignal {
		return jailbreak(res, res+"-"+name, e.clock().Add(offset), true)
	}
	// Each exactly a window apart, judged one by one.
	for _, s := range []events.SafetySignal{jb("t0", 0), jb("t10", 10*time.Minute), jb("t20", 20*time.Minute)} {
		e.publish(t, "eu", s)
	}
	// Out of order: t19 makes t10, t19, t20, still a full window wide.
	e.publish(t, "eu", jb("t19", 19*time.Minute))
	if cs := e.casesOf(t, "eu", res); len(cs) != 0 {
		t.Fatalf("%d cases from hits a window apart", len(cs))
	}
	// t15: t10, t15, t19 lie within 9 minutes.
	e.publish(t, "eu", jb("t15", 15*time.Minute))
	cs := e.casesOf(t, "eu", res)
	if len(cs) != 1 {
		t.Fatalf("%d cases, want 1", len(cs))
	}
	if got, want := sorted(cs[0].RequestIDs), []string{res + "-t10", res + "-t15", res + "-t19"}; !slices.Equal(got, want) {
		t.Fatalf("case holds %v, want %v", got, want)
	}
	for _, out := range []string{res + "-t0", res + "-t20"} {
		if id := e.flagged(t, "eu", out); id != "" {
			t.Fatalf("%s flagged, though it was not among the hits that fired", out)
		}
	}

	// A replay of old signals is judged by their own time.
	old := e.clock().Add(-48 * time.Hour)
	var spread, burst []events.SafetySignal
	for i := range 3 {
		spread = append(spread, jailbreak("res-replay-spread", fmt.Sprintf("spread-%d", i), old.Add(time.Duration(i)*time.Hour), true))
		burst = append(burst, jailbreak("res-replay-burst", fmt.Sprintf("burst-%d", i), old.Add(time.Duration(i)*time.Minute), true))
	}
	e.publish(t, "eu", append(spread, burst...)...)
	if cs := e.casesOf(t, "eu", "res-replay-spread"); len(cs) != 0 {
		t.Fatalf("replayed hits an hour apart opened %d cases", len(cs))
	}
	cs = e.casesOf(t, "eu", "res-replay-burst")
	if len(cs) != 1 || !slices.Equal(sorted(cs[0].RequestIDs), ids(burst)) {
		t.Fatalf("replayed burst: %+v", cs)
	}
	// Its flags expire 30 days after the signals, not after the replay.
	ttl, err := e.rdb["eu"].PTTL(t.Context(), prefix("eu")+"flag:burst-0").Result()
	if want := FlagTTL - 48*time.Hour; err != nil || ttl > want || ttl < want-time.Minute {
		t.Fatalf("flag TTL %s, want about %s (%v)", ttl, want, err)
	}
}

func TestOneOpenCasePerResourceAndRule(t *testing.T) {
	e := start(t) // severe_content: 5 in 10 minutes
	ctx := t.Context()
	res := "res-open"
	n := 0
	next := func(k int, at time.Time) []events.SafetySignal {
		var out []events.SafetySignal
		for range k {
			n++
			out = append(out, severe(res, fmt.Sprintf("%s-%02d", res, n), at.Add(time.Duration(n)*time.Second), events.SeverityHigh))
		}
		return out
	}
	base := e.clock()
	first := next(5, base)
	e.publish(t, "eu", first...)
	cs := e.casesOf(t, "eu", res)
	if len(cs) != 1 {
		t.Fatalf("%d cases, want 1", len(cs))
	}
	a := cs[0]

	// Further hits join the open case, even long after the window.
	more := next(2, e.clock().Add(3*time.Hour))
	e.tick(time.Minute)
	e.publish(t, "eu", more...)
	cs = e.casesOf(t, "eu", res)
	if len(cs) != 1 || cs[0].ID != a.ID || cs[0].Hits != 7 || !slices.Equal(sorted(cs[0].RequestIDs), ids(append(first, more...))) {
		t.Fatalf("after further hits: %+v", cs)
	}
	if !cs[0].UpdatedAt.Equal(e.clock()) || !cs[0].OpenedAt.Equal(a.OpenedAt) {
		t.Fatalf("times after a join: opened %s updated %s", cs[0].OpenedAt, cs[0].UpdatedAt)
	}
	if n := e.openedCount(res); n != 1 {
		t.Fatalf("OnOpen called %d times, want 1", n)
	}
	for _, s := range more {
		if id := e.flagged(t, "eu", s.RequestID); id != a.ID {
			t.Fatalf("joined request %s flagged by %q", s.RequestID, id)
		}
	}

	// Decisions.
	if _, err := e.d.Decide(ctx, "eu", a.ID, "ban", "CN=rev"); !errors.Is(err, ErrBadDecision) {
		t.Fatalf("unknown decision: %v", err)
	}
	if _, err := e.d.Decide(ctx, "eu", a.ID, DecisionWarn, " "); !errors.Is(err, ErrBadDecision) {
		t.Fatalf("decision by nobody: %v", err)
	}
	if _, err := e.d.Decide(ctx, "eu", "case_unknown", DecisionWarn, "CN=rev"); !errors.Is(err, ErrNoCase) {
		t.Fatalf("deciding an unknown case: %v", err)
	}
	e.tick(time.Minute)
	decided, err := e.d.Decide(ctx, "eu", a.ID, DecisionWarn, "CN=rev")
	if err != nil {
		t.Fatal(err)
	}
	if decided.Status != StatusDecided || decided.Decision != DecisionWarn || decided.DecidedBy != "CN=rev" || !decided.DecidedAt.Equal(e.clock()) || len(decided.RequestIDs) != 7 {
		t.Fatalf("decided case %+v", decided)
	}
	if _, err := e.d.Decide(ctx, "eu", a.ID, DecisionSuspend, "CN=rev"); !errors.Is(err, ErrDecided) {
		t.Fatalf("deciding twice: %v", err)
	}
	if _, err := e.d.Case(ctx, "eu", "case_unknown"); !errors.Is(err, ErrNoCase) {
		t.Fatalf("Case of an unknown ID: %v", err)
	}
	ttl, err := e.rdb["eu"].PTTL(ctx, prefix("eu")+"case:"+a.ID).Result()
	if err != nil || ttl > DefaultCaseRetention || ttl < DefaultCaseRetention-time.Minute {
		t.Fatalf("decided case kept for %s, want %s (%v)", ttl, DefaultCaseRetention, err)
	}

	// After the decision, a new case needs a full threshold of new hits:
	// those already in a case are used up, even within their window.
	fresh := next(4, base)
	e.publish(t, "eu", fresh...)
	if cs := e.casesOf(t, "eu", res); len(cs) != 1 {
		t.Fatalf("%d cases before the threshold of new hits", len(cs))
	}
	fifth := next(1, base)
	e.publish(t, "eu", fifth...)
	cs = e.casesOf(t, "eu", res)
	if len(cs) != 2 {
		t.Fatalf("%d cases, want 2", len(cs))
	}
	b := cs[0]
	if b.ID == a.ID || b.Status != StatusOpen || cs[1].ID != a.ID || cs[1].Status != StatusDecided {
		t.Fatalf("cases not open first: %+v", cs)
	}
	if !slices.Equal(sorted(b.RequestIDs), ids(append(fresh, fifth...))) {
		t.Fatalf("new case holds %v", b.RequestIDs)
	}
	if n := e.openedCount(res); n != 2 {
		t.Fatalf("OnOpen called %d times, want 2", n)
	}
	if id := e.flagged(t, "eu", first[0].RequestID); id != a.ID {
		t.Fatalf("request of the decided case flagged by %q", id)
	}

	// Many hits at once, handled concurrently: one case holding them all.
	var burst []events.SafetySignal
	for i := range 20 {
		burst = append(burst, severe("res-burst", fmt.Sprintf("burst-%02d", i), e.clock().Add(time.Duration(i)*time.Second), events.SeverityMedium))
	}
	e.publish(t, "eu", burst...)
	cs = e.casesOf(t, "eu", "res-burst")
	if len(cs) != 1 || cs[0].Hits != 20 || !slices.Equal(sorted(cs[0].RequestIDs), ids(burst)) {
		t.Fatalf("burst: %+v", cs)
	}
	if n := e.openedCount("res-burst"); n != 1 {
		t.Fatalf("OnOpen called %d times for the burst", n)
	}
}

func TestRedeliveredSignalCountsOnce(t *testing.T) {
	e := start(t) // jailbreak_attempts: 3 in 10 minutes
	res := "res-dup"
	s1 := jailbreak(res, "dup-1", e.clock(), true)
	s2 := jailbreak(res, "dup-2", e.clock().Add(time.Second), true)
	e.publish(t, "eu", s1, s1, s1, s2, s2)
	if cs := e.casesOf(t, "eu", res); len(cs) != 0 {
		t.Fatalf("a signal delivered three times counted more than once: %+v", cs)
	}
	s3 := jailbreak(res, "dup-3", e.clock().Add(2*time.Second), true)
	e.publish(t, "eu", s3)
	cs := e.casesOf(t, "eu", res)
	if len(cs) != 1 || cs[0].Hits != 3 || !slices.Equal(cs[0].RequestIDs, []string{"dup-1", "dup-2", "dup-3"}) {
		t.Fatalf("cases %+v", cs)
	}
	// Redelivered after the case opened: nothing changes.
	e.publish(t, "eu", s3, s1)
	cs = e.casesOf(t, "eu", res)
	if len(cs) != 1 || cs[0].Hits != 3 || len(cs[0].RequestIDs) != 3 || e.openedCount(res) != 1 {
		t.Fatalf("after redelivery: %+v, %d notices", cs, e.openedCount(res))
	}
	// When the notice of an opened case was lost (the consumer stopped
	// before OnOpen returned), the redelivered signal that opened it
	// gives it again.
	if err := e.rdb["eu"].SAdd(t.Context(), prefix("eu")+"cases:pending", cs[0].ID).Err(); err != nil {
		t.Fatal(err)
	}
	e.publish(t, "eu", s3)
	if n := e.openedCount(res); n != 2 {
		t.Fatalf("lost notice not given again: %d notices", n)
	}
	if n, _ := e.rdb["eu"].SCard(t.Context(), prefix("eu")+"cases:pending").Result(); n != 0 {
		t.Fatalf("%d notices left pending", n)
	}
	if cs := e.casesOf(t, "eu", res); len(cs) != 1 || cs[0].Hits != 3 {
		t.Fatalf("after the notice: %+v", cs)
	}
}

func TestOtherResourcesNeverJoinACase(t *testing.T) {
	e := start(t)
	var a, b []events.SafetySignal
	for i := range 5 {
		a = append(a, severe("res-a", fmt.Sprintf("a-%d", i), e.clock().Add(time.Duration(i)*time.Second), events.SeverityHigh))
		b = append(b, severe("res-b", fmt.Sprintf("b-%d", i), e.clock().Add(time.Duration(i)*time.Second), events.SeverityHigh))
	}
	e.publish(t, "eu", a...)
	e.publish(t, "eu", b[:4]...)
	ca := e.casesOf(t, "eu", "res-a")
	if len(ca) != 1 || !slices.Equal(sorted(ca[0].RequestIDs), ids(a)) {
		t.Fatalf("case of res-a: %+v", ca)
	}
	if cb := e.casesOf(t, "eu", "res-b"); len(cb) != 0 {
		t.Fatalf("res-b has a case below its threshold: %+v", cb)
	}
	for _, s := range b[:4] {
		if id := e.flagged(t, "eu", s.RequestID); id != "" {
			t.Fatalf("%s of res-b flagged by %s", s.RequestID, id)
		}
	}
	e.publish(t, "eu", b[4])
	cb := e.casesOf(t, "eu", "res-b")
	if len(cb) != 1 || cb[0].ID == ca[0].ID || !slices.Equal(sorted(cb[0].RequestIDs), ids(b)) {
		t.Fatalf("case of res-b: %+v", cb)
	}
	if ca := e.casesOf(t, "eu", "res-a"); len(ca[0].RequestIDs) != 5 {
		t.Fatalf("res-a's case grew: %v", ca[0].RequestIDs)
	}

	// The same blocked content from two resources is not recurring for
	// either.
	var same []events.SafetySignal
	for i := range 2 {
		same = append(same, blocked("res-c", fmt.Sprintf("c-%d", i), e.clock(), "shared text"), blocked("res-d", fmt.Sprintf("d-%d", i), e.clock(), "shared text"))
	}
	e.publish(t, "eu", same...)
	if cs := append(e.casesOf(t, "eu", "res-c"), e.casesOf(t, "eu", "res-d")...); len(cs) != 0 {
		t.Fatalf("content shared across resources opened %+v", cs)
	}

	// A recurring case takes in other content only once that recurs too.
	var rec []events.SafetySignal
	for i := range 3 {
		rec = append(rec, blocked("res-e", fmt.Sprintf("e-x-%d", i), e.clock().Add(time.Duration(i)*time.Second), "text x"))
	}
	e.publish(t, "eu", rec...)
	y1 := blocked("res-e", "e-y-0", e.clock(), "text y")
	e.publish(t, "eu", y1)
	cs := e.casesOf(t, "eu", "res-e")
	if len(cs) != 1 || slices.Contains(cs[0].RequestIDs, "e-y-0") {
		t.Fatalf("other content joined before recurring: %+v", cs)
	}
	x4 := blocked("res-e", "e-x-3", e.clock().Add(time.Hour*2), "text x")
	y2 := blocked("res-e", "e-y-1", e.clock().Add(time.Second), "text y")
	y3 := blocked("res-e", "e-y-2", e.clock().Add(2*time.Second), "text y")
	e.publish(t, "eu", x4, y2)
	e.publish(t, "eu", y3)
	cs = e.casesOf(t, "eu", "res-e")
	want := []string{"e-x-0", "e-x-1", "e-x-2", "e-x-3", "e-y-0", "e-y-1", "e-y-2"}
	if len(cs) != 1 || !slices.Equal(sorted(cs[0].RequestIDs), want) || e.openedCount("res-e") != 1 {
		t.Fatalf("recurring case: %+v", cs)
	}
}

func TestGeographiesAreSeparate(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	res := "res-geo"
	jb := func(geo string, i int) events.SafetySignal {
		return jailbreak(res, fmt.Sprintf("%s-%d", geo, i), e.clock().Add(time.Duration(i)*time.Second), true)
	}
	e.publish(t, "eu", jb("eu", 0), jb("eu", 1))
	e.publish(t, "us", jb("us", 0), jb("us", 1))
	if cs := append(e.casesOf(t, "eu", res), e.casesOf(t, "us", res)...); len(cs) != 0 {
		t.Fatalf("hits of two geographies added up: %+v", cs)
	}
	e.publish(t, "eu", jb("eu", 2))
	eu := e.casesOf(t, "eu", res)
	if len(eu) != 1 || eu[0].Geo != "eu" || !slices.Equal(eu[0].RequestIDs, []string{"eu-0", "eu-1", "eu-2"}) {
		t.Fatalf("eu cases: %+v", eu)
	}
	if us := e.casesOf(t, "us", res); len(us) != 0 {
		t.Fatalf("us cases: %+v", us)
	}
	if _, err := e.d.Case(ctx, "us", eu[0].ID); !errors.Is(err, ErrNoCase) {
		t.Fatalf("eu's case read in us: %v", err)
	}
	if _, err := e.d.Decide(ctx, "us", eu[0].ID, DecisionWarn, "CN=rev"); !errors.Is(err, ErrNoCase) {
		t.Fatalf("eu's case decided in us: %v", err)
	}
	if id := e.flagged(t, "us", "eu-0"); id != "" {
		t.Fatalf("eu's request flagged in us by %s", id)
	}
	if _, err := e.d.Cases(ctx, "ap", 10); err == nil {
		t.Fatal("Cases of a geography not served: no error")
	}
	// Each geography's state stays in its own Redis, under its prefix.
	for geo, rdb := range e.rdb {
		keys, err := rdb.Keys(ctx, "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) == 0 {
			t.Fatalf("no keys in %s's Redis", geo)
		}
		for _, k := range keys {
			if !strings.HasPrefix(k, "terroir:"+geo+":review:") {
				t.Fatalf("key %q in %s's Redis", k, geo)
			}
		}
	}
}

func TestNewChecksConfig(t *testing.T) {
	c := bustest.New(t)
	b := c.Bus(t, bustest.Options{Geos: []string{"eu", "us"}})
	rdb := redistest.Client(t)
	if _, err := New(Config{Bus: b, Redis: map[string]*redis.Client{"eu": rdb}}); err == nil || !strings.Contains(err.Error(), "us") {
		t.Errorf("no Redis for us: %v", err)
	}
	both := map[string]*redis.Client{"eu": rdb, "us": rdb}
	if _, err := New(Config{Bus: b, Redis: both, Rules: []Rule{{Name: "x", Kind: KindJailbreak, Threshold: 0, Window: time.Minute}}}); err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("bad rule: %v", err)
	}
	d, err := New(Config{Bus: b, Redis: both})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.cfg.Rules, DefaultRules()) || !slices.Equal(d.cfg.Geos, []string{"eu", "us"}) {
		t.Fatalf("defaults: %+v", d.cfg)
	}
}

// both is the one signal of a request whose prompt passed: the completion's
// findings, with the prompt's (from p) beside them.
func both(p, c events.SafetySignal) events.SafetySignal {
	c.Prompt = &events.Findings{Categories: p.Categories, Detections: p.Detections, BlocklistHits: p.BlocklistHits,
		ContentHash: p.ContentHash, Filtered: p.Filtered, At: p.At}
	return c
}

// TestATwoDirectionSignalCountsAsTwo: a request's one signal covering its
// prompt and its completion is counted exactly as the two signals it
// replaces (every rule, the same thresholds), and delivering it again, or
// after an earlier producer's prompt signal, counts nothing twice.
func TestATwoDirectionSignalCountsAsTwo(t *testing.T) {
	e := start(t)
	at := func(i int) time.Time { return e.clock().Add(time.Duration(i) * time.Second) }
	// request i of resource res: a prompt that is severe and a jailbreak
	// every other time, and a completion that is severe and filtered.
	pair := func(res string, i int) (events.SafetySignal, events.SafetySignal) {
		id := fmt.Sprintf("%s-%d", res, i)
		p := jailbreak(res, id, at(i), i%2 == 0)
		p.Categories.Hate.Severity = events.SeverityMedium
		c := completion(res, id, at(i).Add(time.Second), true)
		c.Categories.Violence.Severity = events.SeverityHigh
		c.ContentHash = contentHash("the same answer")
		return p, c
	}
	type summary struct {
		rule string
		hits int
		reqs int
	}
	outcome := func(res string) []summary {
		var out []summary
		for _, c := range e.casesOf(t, "eu", res) {
			out = append(out, summary{c.Rule, c.Hits, len(c.RequestIDs)})
		}
		slices.SortFunc(out, func(a, b summary) int { return strings.Compare(a.rule, b.rule) })
		return out
	}
	const n = 6
	var separate, merged []events.SafetySignal
	for i := range n {
		p, c := pair("res-separate", i)
		separate = append(separate, p, c)
		p, c = pair("res-merged", i)
		merged = append(merged, both(p, c))
	}
	e.publish(t, "eu", separate...)
	e.publish(t, "eu", merged...)
	want, got := outcome("res-separate"), outcome("res-merged")
	if len(want) != 4 {
		t.Fatalf("separate signals opened %+v, want a case of every rule", want)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("two-direction signals gave %+v, separate signals %+v", got, want)
	}

	// Redelivered (a stream read again after a rebalance): nothing more.
	e.publish(t, "eu", merged...)
	if again := outcome("res-merged"); !slices.Equal(again, want) {
		t.Fatalf("redelivered signals changed the cases to %+v", again)
	}

	// A prompt signal from an earlier producer, then the request's
	// two-direction signal: the prompt counts once.
	p, c := pair("res-rollout", 0)
	e.publish(t, "eu", p, both(p, c))
	p2, c2 := pair("res-rollout-ref", 0)
	e.publish(t, "eu", p2, c2)
	if got, want := outcome("res-rollout"), outcome("res-rollout-ref"); !slices.Equal(got, want) {
		t.Fatalf("rollout mix gave %+v, want %+v", got, want)
	}
}
