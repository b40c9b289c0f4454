package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/redistest"
)

// Resources of the test control plane.
const (
	contoso  = "contoso"  // eu, content logging on
	fabrikam = "fabrikam" // eu, content logging on
	optedOut = "opted-out"
	acmeUS   = "acme-us" // us, content logging on
)

// canary is prompt and output text that must never reach a log line or
// an error.
const canary = "CANARY-7f3a9 the secret prompt text"

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

type env struct {
	bus   *bus.Bus
	redis map[string]*redis.Client
	state *control.State
	clock *clock
	logs  *observer.ObservedLogs
	store *Store
	stop  func() // stops Run and waits for it
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := bustest.New(t)
	e := &env{
		bus:   c.Bus(t, bustest.Options{Geos: []string{"eu", "us"}}),
		redis: map[string]*redis.Client{"eu": redistest.Client(t), "us": redistest.Client(t)},
		state: control.NewState(zap.NewNop()),
		clock: &clock{t: time.Now()},
	}
	now := time.Now()
	for _, r := range []control.Resource{
		{Name: contoso, Location: "eu", ContentLogging: true},
		{Name: fabrikam, Location: "eu", ContentLogging: true},
		{Name: optedOut, Location: "eu", OptOutApproved: true, ContentLogging: false},
		{Name: acmeUS, Location: "us", ContentLogging: true},
	} {
		spec, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		e.state.ApplyChange(events.ControlChange{Kind: events.ControlResource, ID: r.Name, Actor: "test", At: now, Spec: spec})
	}
	core, logs := observer.New(zapcore.DebugLevel)
	e.logs = logs
	s, err := New(Config{Bus: e.bus, Redis: e.redis, State: e.state, Geos: []string{"eu", "us"}, Now: e.clock.Now, Log: zap.New(core),
		Consumer: bus.ConsumerConfig{CommitInterval: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	e.store = s
	e.start(t)
	t.Cleanup(func() {
		e.stop()
		e.checkNoContentLogged(t)
	})
	return e
}

// start runs the store until stop or the end of the test.
func (e *env) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.store.Run(ctx) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
}

func (e *env) checkNoContentLogged(t *testing.T) {
	t.Helper()
	for _, l := range e.logs.All() {
		line := l.Message + " " + fmt.Sprint(l.ContextMap())
		if strings.Contains(line, "CANARY") {
			t.Errorf("a log line carries content: %s", l.Message)
		}
	}
}

func promptPart(geo, resource, id string, at time.Time) events.AbuseRecord {
	return events.AbuseRecord{RequestID: id, Resource: resource, HomeGeo: geo, ProcessingGeo: geo, Deployment: "chat",
		Operation:           events.OperationChatCompletions,
		Prompt:              json.RawMessage(`{"messages":[{"role":"user","content":"` + canary + ` prompt of ` + id + `"}]}`),
		PromptFilterResults: json.RawMessage(`[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]`),
		CreatedAt:           at}
}

func outputPart(geo, resource, id string, at time.Time) events.AbuseRecord {
	return events.AbuseRecord{RequestID: id, Resource: resource, HomeGeo: geo, ProcessingGeo: geo, Deployment: "chat",
		Operation:            events.OperationChatCompletions,
		Output:               json.RawMessage(`{"choices":[{"index":0,"message":{"role":"assistant","content":"` + canary + ` output of ` + id + `"}}]}`),
		ContentFilterResults: json.RawMessage(`{"violence":{"filtered":false,"severity":"safe"}}`),
		CreatedAt:            at}
}

func (e *env) publish(t *testing.T, geo string, parts ...events.AbuseRecord) {
	t.Helper()
	for _, p := range parts {
		meta := bus.Meta{RequestID: p.RequestID, Resource: p.Resource, HomeGeo: geo, Deployment: p.Deployment}
		if err := e.bus.Publish(t.Context(), geo, bus.StreamAbuseLog, meta, p); err != nil {
			t.Fatal(err)
		}
	}
}

// waitIndexed waits until the index entry of id has n parts.
func (e *env) waitIndexed(t *testing.T, geo, resource, id string, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	key := Key(geo, resource, id)
	for {
		got, err := e.redis[geo].HLen(t.Context(), key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d parts indexed after 30s, want %d", key, got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitCommitted waits until the store's group has committed every record
// of geo's abuse log.
func (e *env) waitCommitted(t *testing.T, geo string) {
	t.Helper()
	adm, err := e.bus.Admin(geo)
	if err != nil {
		t.Fatal(err)
	}
	topic := e.bus.Topic(geo, bus.StreamAbuseLog)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ends, err := adm.ListEndOffsets(t.Context(), topic)
		if err != nil {
			t.Fatal(err)
		}
		// A group that has not joined yet is not found: nothing of it
		// is committed.
		committed, err := adm.FetchOffsets(t.Context(), Group)
		behind := 0
		ends.Each(func(o kadm.ListedOffset) {
			c, ok := committed.Lookup(topic, o.Partition)
			if o.Offset > 0 && (err != nil || !ok || c.At < o.Offset) {
				behind++
			}
		})
		if behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d partitions of %s not committed after 30s (last error: %v)", behind, topic, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) lookup(t *testing.T, geo, resource, id string) (Record, error) {
	t.Helper()
	r, err := e.store.Lookup(t.Context(), geo, resource, id)
	if err != nil && strings.Contains(err.Error(), "CANARY") {
		t.Errorf("an error carries content: %v", err)
	}
	return r, err
}

func TestLookupJoinsBothParts(t *testing.T) {
	e := newEnv(t)
	created := time.Now().UTC().Truncate(time.Millisecond)
	e.publish(t, "eu", promptPart("eu", contoso, "req-joined", created), outputPart("eu", contoso, "req-joined", created.Add(time.Second)))
	e.publish(t, "eu", promptPart("eu", contoso, "req-blocked", created)) // a blocked prompt has no output part
	e.waitIndexed(t, "eu", contoso, "req-joined", 2)
	e.waitIndexed(t, "eu", contoso, "req-blocked", 1)

	r, err := e.lookup(t, "eu", contoso, "req-joined")
	if err != nil {
		t.Fatal(err)
	}
	want := promptPart("eu", contoso, "req-joined", created)
	out := outputPart("eu", contoso, "req-joined", created)
	if r.RequestID != "req-joined" || r.Resource != contoso || r.HomeGeo != "eu" || r.ProcessingGeo != "eu" || r.Deployment != "chat" ||
		r.Operation != events.OperationChatCompletions || !r.CreatedAt.Equal(created) {
		t.Errorf("metadata = %+v", r)
	}
	for name, pair := range map[string][2]json.RawMessage{
		"prompt":                 {r.Prompt, want.Prompt},
		"output":                 {r.Output, out.Output},
		"prompt filter results":  {r.PromptFilterResults, want.PromptFilterResults},
		"content filter results": {r.ContentFilterResults, out.ContentFilterResults},
	} {
		if string(pair[0]) != string(pair[1]) {
			t.Errorf("%s = %s, want %s", name, pair[0], pair[1])
		}
	}

	r, err = e.lookup(t, "eu", contoso, "req-blocked")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Prompt) == 0 || len(r.Output) != 0 || len(r.ContentFilterResults) != 0 {
		t.Errorf("prompt-only record = prompt %d bytes, output %d bytes", len(r.Prompt), len(r.Output))
	}

	// The index holds positions and times, never content.
	for _, g := range []string{"eu", "us"} {
		keys, err := e.redis[g].Keys(t.Context(), "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if !strings.HasPrefix(k, "terroir:"+g+":review:") {
				t.Errorf("key %q in %s's Redis is outside terroir:%s:review:", k, g, g)
			}
			vals, err := e.redis[g].HGetAll(t.Context(), k).Result()
			if err != nil {
				t.Fatal(err)
			}
			for f, v := range vals {
				if strings.Contains(f+v, "CANARY") {
					t.Errorf("index entry %s holds content", k)
				}
			}
		}
	}
}

func TestLookupNotFound(t *testing.T) {
	e := newEnv(t)
	now := time.Now().UTC()
	e.publish(t, "eu", promptPart("eu", contoso, "req-1", now), outputPart("eu", contoso, "req-1", now))
	e.waitIndexed(t, "eu", contoso, "req-1", 2)
	if _, err := e.lookup(t, "eu", contoso, "req-1"); err != nil {
		t.Fatalf("the record itself: %v", err)
	}
	cases := []struct{ name, geo, resource, id string }{
		{"another resource's request ID", "eu", fabrikam, "req-1"},
		{"unknown request ID", "eu", contoso, "req-unknown"},
		{"unknown resource", "eu", "nobody", "req-1"},
		{"empty request ID", "eu", contoso, ""},
		{"another geography", "us", contoso, "req-1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := e.lookup(t, c.geo, c.resource, c.id)
			if !errors.Is(err, ErrNotFound) || err != ErrNotFound {
				t.Fatalf("err = %v, want exactly ErrNotFound", err)
			}
			if r.Prompt != nil || r.Output != nil || r.RequestID != "" {
				t.Fatalf("a not-found lookup returned data: %+v", r.RequestID)
			}
		})
	}
}

// TestIndexPointingElsewhereIsNotFound: an index entry of one resource
// that points at another resource's record (a corrupted or forged entry)
// returns nothing: the record read back must name the request and the
// resource looked up.
func TestIndexPointingElsewhereIsNotFound(t *testing.T) {
	e := newEnv(t)
	now := time.Now().UTC()
	e.publish(t, "eu", promptPart("eu", contoso, "req-1", now))
	e.waitIndexed(t, "eu", contoso, "req-1", 1)
	fields, err := e.redis["eu"].HGetAll(t.Context(), Key("eu", contoso, "req-1")).Result()
	if err != nil {
		t.Fatal(err)
	}
	forged := []struct{ resource, id string }{{fabrikam, "req-1"}, {contoso, "req-2"}}
	for _, f := range forged {
		if err := e.redis["eu"].HSet(t.Context(), Key("eu", f.resource, f.id), fields).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := e.lookup(t, "eu", f.resource, f.id); err != ErrNotFound {
			t.Errorf("%s/%s pointing at contoso/req-1: err = %v, want ErrNotFound", f.resource, f.id, err)
		}
	}
}

func TestContentLoggingOff(t *testing.T) {
	e := newEnv(t)
	now := time.Now().UTC()
	// Records from before the opt-out may still be on the topic.
	e.publish(t, "eu", promptPart("eu", optedOut, "req-1", now), outputPart("eu", optedOut, "req-1", now))
	e.waitIndexed(t, "eu", optedOut, "req-1", 2)
	for _, id := range []string{"req-1", "req-unknown"} {
		if _, err := e.lookup(t, "eu", optedOut, id); !errors.Is(err, ErrNoContentStored) {
			t.Errorf("%s: err = %v, want ErrNoContentStored", id, err)
		}
	}
}

func TestNothingOlderThanRetention(t *testing.T) {
	e := newEnv(t)
	start := time.Now()
	created := start.UTC()
	e.publish(t, "eu", promptPart("eu", contoso, "req-1", created), outputPart("eu", contoso, "req-1", created))
	e.waitIndexed(t, "eu", contoso, "req-1", 2)
	key := Key("eu", contoso, "req-1")

	t.Run("index expires Retention after the newest part", func(t *testing.T) {
		exp, err := e.redis["eu"].Do(t.Context(), "pexpiretime", key).Int64()
		if err != nil {
			t.Fatal(err)
		}
		fields, err := e.redis["eu"].HGetAll(t.Context(), key).Result()
		if err != nil {
			t.Fatal(err)
		}
		var newest int64
		for f, v := range fields {
			p, ok := parsePart(f, v)
			if !ok {
				t.Fatalf("malformed index field %q=%q", f, v)
			}
			newest = max(newest, p.at.UnixMilli())
		}
		if want := newest + Retention.Milliseconds(); exp != want {
			t.Fatalf("index entry expires at %d, want %d (newest part + 30 days)", exp, want)
		}
	})

	cases := []struct {
		name  string
		at    time.Time
		found bool
	}{
		{"29 days on", start.Add(29 * 24 * time.Hour), true},
		{"a minute before 30 days", start.Add(Retention - time.Minute), true},
		{"30 days and a minute on", start.Add(Retention + time.Minute), false},
		{"a year on", start.Add(365 * 24 * time.Hour), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.clock.Set(c.at)
			defer e.clock.Set(time.Now())
			_, err := e.lookup(t, "eu", contoso, "req-1")
			if c.found && err != nil {
				t.Fatalf("err = %v, want the record", err)
			}
			if !c.found {
				if err != ErrNotFound {
					t.Fatalf("err = %v, want ErrNotFound", err)
				}
				// The index entry is still there (Redis keeps real time):
				// the clock alone decided.
				if n, err := e.redis["eu"].Exists(t.Context(), key).Result(); err != nil || n != 1 {
					t.Fatalf("index entry gone (%d, %v): the test no longer checks the clock", n, err)
				}
			}
		})
	}

	t.Run("written more than 30 days ago", func(t *testing.T) {
		// A record whose own time is past retention is never returned,
		// whatever the topic and the index hold.
		old := time.Now().Add(-Retention - time.Hour).UTC()
		e.publish(t, "eu", promptPart("eu", contoso, "req-old", old), outputPart("eu", contoso, "req-old", old))
		e.waitIndexed(t, "eu", contoso, "req-old", 2)
		if _, err := e.lookup(t, "eu", contoso, "req-old"); err != ErrNotFound {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})

	t.Run("index entry past retention", func(t *testing.T) {
		// The record on the topic is fresh; its index entry says it is
		// not, and the index decides too.
		fields, err := e.redis["eu"].HGetAll(t.Context(), key).Result()
		if err != nil {
			t.Fatal(err)
		}
		old := strconv.FormatInt(time.Now().Add(-Retention-time.Minute).UnixMilli(), 10)
		for f := range fields {
			if err := e.redis["eu"].HSet(t.Context(), key, f, old).Err(); err != nil {
				t.Fatal(err)
			}
		}
		defer func() {
			if err := e.redis["eu"].HSet(context.Background(), key, fields).Err(); err != nil {
				t.Error(err)
			}
		}()
		if _, err := e.lookup(t, "eu", contoso, "req-1"); err != ErrNotFound {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})

	t.Run("one part past retention", func(t *testing.T) {
		old := time.Now().Add(-Retention - time.Hour).UTC()
		e.publish(t, "eu", promptPart("eu", contoso, "req-half", old), outputPart("eu", contoso, "req-half", time.Now().UTC()))
		e.waitIndexed(t, "eu", contoso, "req-half", 2)
		r, err := e.lookup(t, "eu", contoso, "req-half")
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Prompt) != 0 || len(r.Output) == 0 {
			t.Fatalf("prompt %d bytes, output %d bytes: want only the output", len(r.Prompt), len(r.Output))
		}
	})

	t.Run("record timestamp past retention is not indexed", func(t *testing.T) {
		e.publish(t, "eu", promptPart("eu", contoso, "req-late", time.Now().UTC()))
		e.waitIndexed(t, "eu", contoso, "req-late", 1)
		fields, err := e.redis["eu"].HGetAll(t.Context(), Key("eu", contoso, "req-late")).Result()
		if err != nil {
			t.Fatal(err)
		}
		var p part
		for f, v := range fields {
			p, _ = parsePart(f, v)
		}
		d, err := e.bus.ReadAt(t.Context(), "eu", bus.StreamAbuseLog, p.partition, p.offset)
		if err != nil {
			t.Fatal(err)
		}
		d.Meta.RequestID = "req-late-2"
		d.Record.Timestamp = time.Now().Add(-Retention - time.Second)
		if err := e.store.index(t.Context(), d); err != nil {
			t.Fatal(err)
		}
		if n, err := e.redis["eu"].Exists(t.Context(), Key("eu", contoso, "req-late-2")).Result(); err != nil || n != 0 {
			t.Fatalf("a record past retention was indexed (%d, %v)", n, err)
		}
	})
}

func TestGeographiesAreSeparate(t *testing.T) {
	e := newEnv(t)
	now := time.Now().UTC()
	e.publish(t, "eu", promptPart("eu", contoso, "req-eu", now), outputPart("eu", contoso, "req-eu", now))
	e.publish(t, "us", promptPart("us", acmeUS, "req-us", now), outputPart("us", acmeUS, "req-us", now))
	e.waitIndexed(t, "eu", contoso, "req-eu", 2)
	e.waitIndexed(t, "us", acmeUS, "req-us", 2)

	if _, err := e.lookup(t, "eu", contoso, "req-eu"); err != nil {
		t.Fatalf("eu record in eu: %v", err)
	}
	if _, err := e.lookup(t, "us", acmeUS, "req-us"); err != nil {
		t.Fatalf("us record in us: %v", err)
	}
	if _, err := e.lookup(t, "us", contoso, "req-eu"); err != ErrNotFound {
		t.Errorf("eu record via us: err = %v, want ErrNotFound", err)
	}
	if _, err := e.lookup(t, "eu", acmeUS, "req-us"); err != ErrNotFound {
		t.Errorf("us record via eu: err = %v, want ErrNotFound", err)
	}
	for g, want := range map[string]string{"eu": Key("eu", contoso, "req-eu"), "us": Key("us", acmeUS, "req-us")} {
		keys, err := e.redis[g].Keys(t.Context(), "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 1 || keys[0] != want {
			t.Errorf("%s's Redis holds %q, want only %q", g, keys, want)
		}
	}
	if _, err := e.lookup(t, "mars", contoso, "req-eu"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("a geography not served: err = %v, want a configuration error", err)
	}
}

func TestRedeliveryIsIdempotent(t *testing.T) {
	e := newEnv(t)
	now := time.Now().UTC()
	ids := []string{"req-1", "req-2", "req-3"}
	for _, id := range ids {
		e.publish(t, "eu", promptPart("eu", contoso, id, now), outputPart("eu", contoso, id, now))
	}
	for _, id := range ids {
		e.waitIndexed(t, "eu", contoso, id, 2)
	}
	type entry struct {
		fields map[string]string
		expiry int64
	}
	snapshot := func() map[string]entry {
		t.Helper()
		out := map[string]entry{}
		keys, err := e.redis["eu"].Keys(t.Context(), "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			f, err := e.redis["eu"].HGetAll(t.Context(), k).Result()
			if err != nil {
				t.Fatal(err)
			}
			x, err := e.redis["eu"].Do(t.Context(), "pexpiretime", k).Int64()
			if err != nil {
				t.Fatal(err)
			}
			out[k] = entry{f, x}
		}
		return out
	}
	before := snapshot()
	want, err := e.lookup(t, "eu", contoso, "req-2")
	if err != nil {
		t.Fatal(err)
	}

	// The whole log again, as after a crash before the commit: forget the
	// group's offsets and consume from the start.
	e.waitCommitted(t, "eu")
	e.stop()
	adm, err := e.bus.Admin("eu")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adm.DeleteGroups(t.Context(), Group); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	e.waitCommitted(t, "eu")
	// And each part handed to the indexer again, several times.
	for _, ent := range before {
		for f, v := range ent.fields {
			p, _ := parsePart(f, v)
			d, err := e.bus.ReadAt(t.Context(), "eu", bus.StreamAbuseLog, p.partition, p.offset)
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				if err := e.store.index(t.Context(), d); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	after := snapshot()
	if len(after) != len(before) {
		t.Fatalf("%d index entries after redelivery, %d before", len(after), len(before))
	}
	for k, b := range before {
		a := after[k]
		if !maps.Equal(a.fields, b.fields) || a.expiry != b.expiry {
			t.Errorf("%s changed on redelivery: %v exp %d → %v exp %d", k, b.fields, b.expiry, a.fields, a.expiry)
		}
	}
	got, err := e.lookup(t, "eu", contoso, "req-2")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Prompt) != string(want.Prompt) || string(got.Output) != string(want.Output) || !got.CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("the record changed on redelivery")
	}

	// A producer that retried appends a second copy of a part: the
	// record is the same.
	e.publish(t, "eu", promptPart("eu", contoso, "req-2", now))
	e.waitIndexed(t, "eu", contoso, "req-2", 3)
	got, err = e.lookup(t, "eu", contoso, "req-2")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Prompt) != string(want.Prompt) || string(got.Output) != string(want.Output) {
		t.Errorf("a duplicated part changed the record")
	}
}

func TestMalformedRecordsAreNotIndexed(t *testing.T) {
	e := newEnv(t)
	now := time.Now().UTC()
	e.publish(t, "eu", promptPart("eu", contoso, "req-1", now))
	e.waitIndexed(t, "eu", contoso, "req-1", 1)
	fields, err := e.redis["eu"].HGetAll(t.Context(), Key("eu", contoso, "req-1")).Result()
	if err != nil {
		t.Fatal(err)
	}
	var p part
	for f, v := range fields {
		p, _ = parsePart(f, v)
	}
	cases := []struct {
		name   string
		change func(m *bus.Meta)
	}{
		{"no request ID", func(m *bus.Meta) { m.RequestID = "" }},
		{"no resource", func(m *bus.Meta) { m.Resource = "" }},
		{"resource with a colon", func(m *bus.Meta) { m.Resource = "a:b" }},
		{"another home geography", func(m *bus.Meta) { m.HomeGeo = "us" }},
		{"another event type", func(m *bus.Meta) { m.Type = events.TypeInferenceRequest }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := e.bus.ReadAt(t.Context(), "eu", bus.StreamAbuseLog, p.partition, p.offset)
			if err != nil {
				t.Fatal(err)
			}
			c.change(&d.Meta)
			if err := e.store.index(t.Context(), d); !bus.IsPermanent(err) {
				t.Fatalf("err = %v, want a permanent error", err)
			}
			keys, err := e.redis["eu"].Keys(t.Context(), "*").Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 1 {
				t.Fatalf("index holds %q", keys)
			}
		})
	}
}

func TestNewChecksConfig(t *testing.T) {
	b := bustest.New(t).Bus(t, bustest.Options{Geos: []string{"eu"}})
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	st := control.NewState(zap.NewNop())
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"complete", Config{Bus: b, State: st, Geos: []string{"eu"}, Redis: map[string]*redis.Client{"eu": rdb}}, true},
		{"no bus", Config{State: st, Geos: []string{"eu"}, Redis: map[string]*redis.Client{"eu": rdb}}, false},
		{"no state", Config{Bus: b, Geos: []string{"eu"}, Redis: map[string]*redis.Client{"eu": rdb}}, false},
		{"no geography", Config{Bus: b, State: st, Redis: map[string]*redis.Client{"eu": rdb}}, false},
		{"no Redis for a geography", Config{Bus: b, State: st, Geos: []string{"eu", "us"}, Redis: map[string]*redis.Client{"eu": rdb}}, false},
		{"geography twice", Config{Bus: b, State: st, Geos: []string{"eu", "eu"}, Redis: map[string]*redis.Client{"eu": rdb}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.cfg)
			if (err == nil) != c.ok {
				t.Fatalf("err = %v, want ok=%v", err, c.ok)
			}
		})
	}
}

// fullRecord is a request's one record holding both parts, as content
// safety writes it for a prompt that passed.
func fullRecord(geo, resource, id string, at time.Time) events.AbuseRecord {
	r := promptPart(geo, resource, id, at)
	o := outputPart(geo, resource, id, at)
	r.Output, r.ContentFilterResults = o.Output, o.ContentFilterResults
	return r
}

// TestOneFullRecordPerRequest: a request's single record with both parts
// is looked up whole, and written again (content safety read a stream
// again after a rebalance) it still gives the one record.
func TestOneFullRecordPerRequest(t *testing.T) {
	e := newEnv(t)
	created := time.Now().UTC().Truncate(time.Millisecond)
	want := fullRecord("eu", contoso, "req-full", created)
	e.publish(t, "eu", want)
	e.waitIndexed(t, "eu", contoso, "req-full", 1)
	check := func(r Record, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if r.RequestID != "req-full" || r.Resource != contoso || !r.CreatedAt.Equal(created) || r.Operation != events.OperationChatCompletions {
			t.Errorf("metadata = %+v", r)
		}
		for name, pair := range map[string][2]json.RawMessage{
			"prompt":                 {r.Prompt, want.Prompt},
			"output":                 {r.Output, want.Output},
			"prompt filter results":  {r.PromptFilterResults, want.PromptFilterResults},
			"content filter results": {r.ContentFilterResults, want.ContentFilterResults},
		} {
			if string(pair[0]) != string(pair[1]) {
				t.Errorf("%s = %s, want %s", name, pair[0], pair[1])
			}
		}
	}
	check(e.lookup(t, "eu", contoso, "req-full"))

	e.publish(t, "eu", fullRecord("eu", contoso, "req-full", created.Add(time.Second)))
	e.waitIndexed(t, "eu", contoso, "req-full", 2)
	check(e.lookup(t, "eu", contoso, "req-full"))
}
