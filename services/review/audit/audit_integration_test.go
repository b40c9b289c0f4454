package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
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

// env is a Kafka cluster with a bus, and a Redis server per geography.
type env struct {
	cluster *bustest.Cluster
	ns      string
	bus     *bus.Bus
	addrs   map[string]string
	rdb     map[string]*redis.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{cluster: bustest.New(t), ns: bustest.Namespace(), addrs: map[string]string{}, rdb: map[string]*redis.Client{}}
	e.bus = e.cluster.Bus(t, bustest.Options{Namespace: e.ns})
	for _, g := range []string{"eu", "us"} {
		e.addrs[g] = redistest.Start(t)
		e.rdb[g] = e.client(t, g)
	}
	return e
}

// client is a Redis client of its own to geo's server, as another
// instance would have.
func (e *env) client(t *testing.T, geo string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: e.addrs[geo]})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (e *env) log(t *testing.T, b *bus.Bus, rdb map[string]*redis.Client, mod func(*Config)) *Log {
	t.Helper()
	cfg := Config{Bus: b, Redis: rdb, Geos: []string{"eu", "us"}, Log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))}
	if mod != nil {
		mod(&cfg)
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func entry(i int) events.AuditEntry {
	return events.AuditEntry{
		Actor:   fmt.Sprintf("CN=reviewer-%d,O=Terroir Trust and Safety,C=IE", i%3),
		Action:  []events.AuditAction{events.AuditLookup, events.AuditAccessRequested, events.AuditView, events.AuditDecision}[i%4],
		Subject: fmt.Sprintf("req_%04d", i),
		Detail:  map[string]string{"case_id": fmt.Sprintf("case_%d", i/2), "n": fmt.Sprint(i)},
	}
}

func appendN(t *testing.T, l *Log, geo string, n int) []events.AuditEntry {
	t.Helper()
	var out []events.AuditEntry
	for i := range n {
		e, err := l.Append(t.Context(), geo, entry(i))
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		out = append(out, e)
	}
	return out
}

func readChain(t *testing.T, b *bus.Bus, geo string) []events.AuditEntry {
	t.Helper()
	chain, err := ReadChain(t.Context(), b, geo)
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

var (
	hexHash  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	geoRegex = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
)

// checkWire checks the constraints of audit.entry.v1 on each entry and
// that the chain is whole.
func checkWire(t *testing.T, geo string, chain []events.AuditEntry) {
	t.Helper()
	for i, e := range chain {
		if e.Seq != int64(i+1) {
			t.Fatalf("entry %d has seq %d", i, e.Seq)
		}
		if e.Geo != geo || !geoRegex.MatchString(e.Geo) || !hexHash.MatchString(e.Hash) || e.Actor == "" || e.Subject == "" || e.At.IsZero() {
			t.Fatalf("entry %d breaks the schema: %+v", e.Seq, e)
		}
		if (e.Seq == 1) != (e.PrevHash == "") || (e.Seq > 1 && !hexHash.MatchString(e.PrevHash)) {
			t.Fatalf("entry %d has prev_hash %q", e.Seq, e.PrevHash)
		}
	}
	if b := VerifyIn(geo, chain); b != nil {
		t.Fatalf("chain of %s broken: %+v", geo, *b)
	}
}

func TestConcurrentAppendsFormOneChain(t *testing.T) {
	e := newEnv(t)
	// A second instance: its own bus on the same topics, its own Redis
	// connections.
	b2 := e.cluster.Bus(t, bustest.Options{Namespace: e.ns})
	logs := []*Log{
		e.log(t, e.bus, e.rdb, nil),
		e.log(t, b2, map[string]*redis.Client{"eu": e.client(t, "eu"), "us": e.client(t, "us")}, nil),
	}
	const perWorker, workers = 8, 3
	var (
		mu       sync.Mutex
		appended = map[string]int64{}
		wg       sync.WaitGroup
		errs     = make(chan error, len(logs)*workers*perWorker)
	)
	for li, l := range logs {
		for w := range workers {
			wg.Go(func() {
				for i := range perWorker {
					got, err := l.Append(t.Context(), "eu", entry(li*100+w*10+i))
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					appended[got.Hash] = got.Seq
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	chain := readChain(t, e.bus, "eu")
	const total = 2 * workers * perWorker
	if len(chain) != total || len(appended) != total {
		t.Fatalf("chain has %d entries, %d appends returned; want %d", len(chain), len(appended), total)
	}
	checkWire(t, "eu", chain)
	if Verify(chain) != nil {
		t.Fatal("Verify finds a break in a whole chain")
	}
	for _, c := range chain {
		if seq, ok := appended[c.Hash]; !ok || seq != c.Seq {
			t.Fatalf("entry %d on the topic is not what Append returned", c.Seq)
		}
	}
	if us := readChain(t, e.bus, "us"); len(us) != 0 {
		t.Fatalf("us chain has %d entries, want none", len(us))
	}
	// The lock is released after each append.
	if n, err := e.rdb["eu"].Exists(t.Context(), keyPrefix("eu")+"lock").Result(); err != nil || n != 0 {
		t.Fatalf("lock left behind: %d %v", n, err)
	}
}

func TestVerifyFindsChangedRemovedAndRepeatedEntries(t *testing.T) {
	e := newEnv(t)
	l := e.log(t, e.bus, e.rdb, nil)
	appendN(t, l, "eu", 6)
	chain := readChain(t, e.bus, "eu")
	if len(chain) != 6 || Verify(chain) != nil {
		t.Fatalf("read back %d entries, Verify %+v", len(chain), Verify(chain))
	}
	mod := func(f func(c []events.AuditEntry) []events.AuditEntry) []events.AuditEntry {
		c := make([]events.AuditEntry, len(chain))
		for i, x := range chain {
			x.Detail = maps(x.Detail)
			c[i] = x
		}
		return f(c)
	}
	tests := []struct {
		name   string
		chain  []events.AuditEntry
		seq    int64
		reason string
	}{
		{"whole", mod(func(c []events.AuditEntry) []events.AuditEntry { return c }), 0, ""},
		{"empty", nil, 0, ""},
		{"actor changed", mod(func(c []events.AuditEntry) []events.AuditEntry { c[2].Actor = "CN=someone.else"; return c }), 3, "hash does not match the entry"},
		{"subject changed", mod(func(c []events.AuditEntry) []events.AuditEntry { c[0].Subject = "req_other"; return c }), 1, "hash does not match the entry"},
		{"action changed", mod(func(c []events.AuditEntry) []events.AuditEntry { c[5].Action = events.AuditAccessApproved; return c }), 6, "hash does not match the entry"},
		{"detail value changed", mod(func(c []events.AuditEntry) []events.AuditEntry { c[3].Detail["case_id"] = "case_x"; return c }), 4, "hash does not match the entry"},
		{"detail added", mod(func(c []events.AuditEntry) []events.AuditEntry { c[3].Detail["extra"] = ""; return c }), 4, "hash does not match the entry"},
		{"detail removed", mod(func(c []events.AuditEntry) []events.AuditEntry { c[1].Detail = nil; return c }), 2, "hash does not match the entry"},
		{"time moved by a nanosecond", mod(func(c []events.AuditEntry) []events.AuditEntry { c[4].At = c[4].At.Add(1); return c }), 5, "hash does not match the entry"},
		{"hash changed", mod(func(c []events.AuditEntry) []events.AuditEntry { c[1].Hash = strings.Repeat("0", 64); return c }), 2, "hash does not match the entry"},
		{"entry rewritten with a fresh hash", mod(func(c []events.AuditEntry) []events.AuditEntry {
			c[2].Actor = "CN=someone.else"
			c[2].Hash = Hash(c[2])
			return c
		}), 4, "prev_hash does not match entry 3"},
		{"entry removed", mod(func(c []events.AuditEntry) []events.AuditEntry { return slices.Delete(c, 3, 4) }), 4, "missing entry"},
		{"first entry removed", mod(func(c []events.AuditEntry) []events.AuditEntry { return c[1:] }), 1, "missing entry"},
		{"entry repeated", mod(func(c []events.AuditEntry) []events.AuditEntry { return slices.Insert(c, 3, c[2]) }), 3, "entry 3 repeated (or out of order) after entry 3"},
		{"entries swapped", mod(func(c []events.AuditEntry) []events.AuditEntry { c[2], c[3] = c[3], c[2]; return c }), 3, "missing entry"},
		{"wrong geography", mod(func(c []events.AuditEntry) []events.AuditEntry { c[4].Geo = "us"; return c }), 5, `entry belongs to geography "us", not "eu"`},
		{"first entry with a prev_hash", mod(func(c []events.AuditEntry) []events.AuditEntry {
			c[0].PrevHash = c[1].Hash
			c[0].Hash = Hash(c[0])
			return c
		}), 1, "prev_hash of the first entry is not empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := Verify(tc.chain)
			if tc.seq == 0 {
				if b != nil {
					t.Fatalf("Verify = %+v, want nil", *b)
				}
				return
			}
			if b == nil || b.Seq != tc.seq || b.Reason != tc.reason {
				t.Fatalf("Verify = %+v, want seq %d %q", b, tc.seq, tc.reason)
			}
		})
	}
}

func maps(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func TestVerifyCommand(t *testing.T) {
	e := newEnv(t)
	l := e.log(t, e.bus, e.rdb, nil)
	appendN(t, l, "eu", 5)
	ctx := t.Context()

	var out bytes.Buffer
	ok, err := VerifyCommand(ctx, e.bus, "eu", &out)
	if err != nil || !ok || out.String() != "audit chain of eu: 5 entries, every link holds\n" {
		t.Fatalf("VerifyCommand(eu) = %v, %v, %q", ok, err, out.String())
	}

	// The chain rewritten into us's topic, with entry 3 altered after it
	// was hashed.
	prev := ""
	for _, c := range readChain(t, e.bus, "eu") {
		c.Geo, c.PrevHash = "us", prev
		c.Hash = Hash(c)
		prev = c.Hash
		if c.Seq == 3 {
			c.Subject = "req_altered"
		}
		if err := e.bus.Publish(ctx, "us", bus.StreamAudit, bus.Meta{Key: "us"}, c); err != nil {
			t.Fatal(err)
		}
	}
	out.Reset()
	ok, err = VerifyCommand(ctx, e.bus, "us", &out)
	if err != nil || ok || out.String() != "audit chain of us: first broken link at seq 3: hash does not match the entry\n" {
		t.Fatalf("VerifyCommand(us) = %v, %v, %q", ok, err, out.String())
	}

	// eu's chain copied unchanged into another deployment's us topic is
	// not us's chain.
	other := e.cluster.Bus(t, bustest.Options{})
	for _, c := range readChain(t, e.bus, "eu") {
		if err := other.Publish(ctx, "us", bus.StreamAudit, bus.Meta{Key: "us"}, c); err != nil {
			t.Fatal(err)
		}
	}
	out.Reset()
	ok, err = VerifyCommand(ctx, other, "us", &out)
	if err != nil || ok || out.String() != "audit chain of us: first broken link at seq 1: entry belongs to geography \"eu\", not \"us\"\n" {
		t.Fatalf("VerifyCommand(copy) = %v, %v, %q", ok, err, out.String())
	}

	// An empty chain holds.
	out.Reset()
	ok, err = VerifyCommand(ctx, other, "eu", &out)
	if err != nil || !ok || out.String() != "audit chain of eu: 0 entries, every link holds\n" {
		t.Fatalf("VerifyCommand(empty) = %v, %v, %q", ok, err, out.String())
	}
}

func TestChainContinuesAfterRedisLosesTheHead(t *testing.T) {
	e := newEnv(t)
	l := e.log(t, e.bus, e.rdb, nil)
	ctx := t.Context()
	first := appendN(t, l, "eu", 3)

	// Redis lost everything.
	if err := e.rdb["eu"].Del(ctx, keyPrefix("eu")+"head", keyPrefix("eu")+"lock").Err(); err != nil {
		t.Fatal(err)
	}
	got, err := l.Append(ctx, "eu", entry(10))
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != 4 || got.PrevHash != first[2].Hash {
		t.Fatalf("after losing the head: seq %d prev %s, want 4 after %s", got.Seq, got.PrevHash, first[2].Hash)
	}

	// An append reached the topic but not Redis.
	stray := entry(11)
	stray.Geo, stray.Seq, stray.PrevHash, stray.At = "eu", 5, got.Hash, time.Now().UTC()
	stray.Hash = Hash(stray)
	if err := e.bus.Publish(ctx, "eu", bus.StreamAudit, bus.Meta{Key: "eu"}, stray); err != nil {
		t.Fatal(err)
	}
	got, err = l.Append(ctx, "eu", entry(12))
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != 6 || got.PrevHash != stray.Hash {
		t.Fatalf("after a stray entry: seq %d, want 6 after the stray entry", got.Seq)
	}
	checkWire(t, "eu", readChain(t, e.bus, "eu"))

	// A head ahead of the topic stops appends rather than forking.
	if err := e.rdb["eu"].HSet(ctx, keyPrefix("eu")+"head", "next", 100).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, "eu", entry(13)); !errors.Is(err, ErrBroken) {
		t.Fatalf("append with a head ahead of the topic: %v, want ErrBroken", err)
	}
	if n := len(readChain(t, e.bus, "eu")); n != 6 {
		t.Fatalf("chain has %d entries, want 6", n)
	}
	if err := e.rdb["eu"].Del(ctx, keyPrefix("eu")+"head").Err(); err != nil {
		t.Fatal(err)
	}
	if got, err = l.Append(ctx, "eu", entry(14)); err != nil || got.Seq != 7 {
		t.Fatalf("append after rebuilding the head: seq %d, %v", got.Seq, err)
	}
	checkWire(t, "eu", readChain(t, e.bus, "eu"))

	// An entry on the topic that does not continue the chain (a second
	// entry 7) stops appends too.
	fork := entry(15)
	fork.Geo, fork.Seq, fork.PrevHash, fork.At = "eu", 7, stray.Hash, time.Now().UTC()
	fork.Hash = Hash(fork)
	if err := e.bus.Publish(ctx, "eu", bus.StreamAudit, bus.Meta{Key: "eu"}, fork); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, "eu", entry(16)); !errors.Is(err, ErrBroken) {
		t.Fatalf("append behind a forked entry: %v, want ErrBroken", err)
	}
	if n := len(readChain(t, e.bus, "eu")); n != 8 {
		t.Fatalf("chain has %d records, want 8", n)
	}
}

func TestRecentIsNewestFirst(t *testing.T) {
	e := newEnv(t)
	l := e.log(t, e.bus, e.rdb, nil)
	ctx := t.Context()
	if got, err := l.Recent(ctx, "eu", 5); err != nil || len(got) != 0 {
		t.Fatalf("Recent of an empty chain = %d entries, %v", len(got), err)
	}
	appendN(t, l, "eu", 5)
	appendN(t, l, "us", 2)
	seqs := func(n int) []int64 {
		got, err := l.Recent(ctx, "eu", n)
		if err != nil {
			t.Fatal(err)
		}
		var s []int64
		for _, e := range got {
			if e.Geo != "eu" {
				t.Fatalf("Recent(eu) returned an entry of %s", e.Geo)
			}
			s = append(s, e.Seq)
		}
		return s
	}
	if got := seqs(3); !slices.Equal(got, []int64{5, 4, 3}) {
		t.Fatalf("Recent(3) = %v", got)
	}
	if got := seqs(10); !slices.Equal(got, []int64{5, 4, 3, 2, 1}) {
		t.Fatalf("Recent(10) = %v", got)
	}
	if got := seqs(0); len(got) != 0 {
		t.Fatalf("Recent(0) = %v", got)
	}
	if _, err := l.Recent(ctx, "ap", 3); err == nil {
		t.Fatal("Recent of a geography not served: no error")
	}
}

func TestAppendFillsAndChecksEntries(t *testing.T) {
	e := newEnv(t)
	clock := time.Date(2025, 3, 15, 11, 2, 11, 500, time.FixedZone("CET", 3600))
	l := e.log(t, e.bus, e.rdb, func(c *Config) { c.Now = func() time.Time { return clock } })
	ctx := t.Context()
	bad := []struct {
		name string
		geo  string
		e    events.AuditEntry
	}{
		{"no actor", "eu", events.AuditEntry{Action: events.AuditView, Subject: "req_1"}},
		{"no subject", "eu", events.AuditEntry{Actor: "CN=a", Action: events.AuditView}},
		{"unknown action", "eu", events.AuditEntry{Actor: "CN=a", Action: "peek", Subject: "req_1"}},
		{"other geography", "eu", events.AuditEntry{Geo: "us", Actor: "CN=a", Action: events.AuditView, Subject: "req_1"}},
		{"invalid UTF-8", "eu", events.AuditEntry{Actor: "CN=a", Action: events.AuditView, Subject: "req_1", Detail: map[string]string{"k": "\xff"}}},
	}
	for _, tc := range bad {
		if _, err := l.Append(ctx, tc.geo, tc.e); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.name, err)
		}
	}
	if _, err := l.Append(ctx, "ap", entry(1)); err == nil {
		t.Error("append to a geography not served: no error")
	}
	got, err := l.Append(ctx, "eu", events.AuditEntry{Actor: "CN=a", Action: events.AuditView, Subject: "req_1", Detail: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != 1 || got.Geo != "eu" || !got.At.Equal(clock) || got.At.Location() != time.UTC || got.Detail != nil {
		t.Fatalf("appended %+v", got)
	}
	chain := readChain(t, e.bus, "eu")
	if len(chain) != 1 || chain[0].Hash != got.Hash || !chain[0].At.Equal(clock) {
		t.Fatalf("topic holds %+v", chain)
	}
	checkWire(t, "eu", chain)
}

func TestAppendWaitsForTheLockBoundedly(t *testing.T) {
	e := newEnv(t)
	l := e.log(t, e.bus, e.rdb, func(c *Config) { c.LockWait = 200 * time.Millisecond })
	ctx := t.Context()
	key := keyPrefix("eu") + "lock"
	if err := e.rdb["eu"].Set(ctx, key, "another-instance", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := l.Append(ctx, "eu", entry(1)); !errors.Is(err, ErrBusy) {
		t.Fatalf("append under another's lock: %v, want ErrBusy", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("waited %s for the lock", waited)
	}
	if v, _ := e.rdb["eu"].Get(ctx, key).Result(); v != "another-instance" {
		t.Fatalf("another instance's lock was touched: %q", v)
	}
	if err := e.rdb["eu"].Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := l.Append(ctx, "eu", entry(1)); err != nil || got.Seq != 1 {
		t.Fatalf("append once the lock is free: %d, %v", got.Seq, err)
	}
	// A context that ends while waiting ends the wait.
	if err := e.rdb["eu"].Set(ctx, key, "another-instance", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := l.Append(cctx, "eu", entry(2)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("append with an ending context: %v", err)
	}
}

func TestNewChecksConfig(t *testing.T) {
	e := newEnv(t)
	if _, err := New(Config{Redis: e.rdb, Geos: []string{"eu"}}); err == nil {
		t.Error("no bus: no error")
	}
	if _, err := New(Config{Bus: e.bus, Redis: map[string]*redis.Client{"eu": e.rdb["eu"]}}); err == nil || !strings.Contains(err.Error(), "us") {
		t.Errorf("no Redis for us: %v", err)
	}
}
