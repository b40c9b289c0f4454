// Package audit keeps each geography's audit trail of access to
// abuse-monitoring records: an append-only hash chain on the geography's
// audit topic, where every entry commits to the one before, and a
// verifier that finds the first broken link.
//
// # The chain
//
// Entries of a geography live on terroir.<geo>.audit (one partition,
// retained forever, plain JSON, audit.entry.v1). Seq runs from 1 without
// gaps; PrevHash is the Hash of the entry before ("" for entry 1); Hash is
// the SHA-256, in lowercase hex, of the entry's canonical encoding (see
// Hash). Changing, removing, reordering or inserting an entry breaks a
// link that Verify reports.
//
// # Appending
//
// Several review instances of a geography may append at once. Appends of a
// geography are serialised by a lock in that geography's Redis, and the
// chain head is kept beside it:
//
//	terroir:<geo>:review:audit:lock  random token of the holder (SET NX PX; released by compare-and-delete)
//	terroir:<geo>:review:audit:head  hash {seq, hash, next}: the last entry's Seq and Hash, and the topic offset after it
//
// Under the lock the head is compared with the topic's end offset. When an
// earlier append reached the topic but not Redis, the missing entries are
// read from the topic, checked link by link and taken into the head; when
// Redis lost the head, it is rebuilt from the topic's last entry. A head
// ahead of the topic, or a topic whose entries do not continue the head,
// stops appends with ErrBroken rather than forking the chain.
package audit

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
)

// Defaults of Config.
const (
	// DefaultLockTTL is how long an append may hold its geography's lock
	// before the lock lapses.
	DefaultLockTTL = 30 * time.Second
	// DefaultLockWait bounds how long an append waits for the lock.
	DefaultLockWait = 10 * time.Second
)

var (
	// ErrBusy: the geography's append lock was not free within LockWait.
	ErrBusy = errors.New("audit log busy: append lock not acquired in time")
	// ErrBroken: the topic does not continue the chain head (or the head
	// is ahead of the topic); appending would fork or hide the break.
	ErrBroken = errors.New("audit chain broken")
	// ErrInvalid: the entry cannot be appended as given.
	ErrInvalid = errors.New("invalid audit entry")
)

// Config configures a log.
type Config struct {
	Bus   *bus.Bus
	Redis map[string]*redis.Client // per geography: the chain head and the append lock
	// Geos are the geographies the log appends to; default every
	// geography of Bus.
	Geos []string
	Log  *zap.Logger
	// LockTTL is how long an append may hold the lock; default
	// DefaultLockTTL. The publish of an entry is bounded to a third of it,
	// so an entry lands (or fails) well before the lock could lapse and
	// another instance append behind it.
	LockTTL time.Duration
	// LockWait bounds the wait for the lock; default DefaultLockWait.
	LockWait time.Duration
	// Now is the clock that stamps entries given without At; default
	// time.Now.
	Now func() time.Time
}

// Log appends to and reads the audit chains of its geographies. It is
// safe for concurrent use, also by several processes sharing a
// geography's Redis and topic.
type Log struct{ cfg Config }

var geoPattern = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

// New checks cfg.
func New(cfg Config) (*Log, error) {
	if cfg.Bus == nil {
		return nil, errors.New("audit: a bus is required")
	}
	if len(cfg.Geos) == 0 {
		cfg.Geos = cfg.Bus.Geos()
	}
	var errs []error
	for _, g := range cfg.Geos {
		if !geoPattern.MatchString(g) {
			errs = append(errs, fmt.Errorf("audit: geography %q is not a valid name", g))
			continue
		}
		if cfg.Redis[g] == nil {
			errs = append(errs, fmt.Errorf("audit: no Redis for geography %s", g))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.LockTTL <= 0 {
		cfg.LockTTL = DefaultLockTTL
	}
	if cfg.LockWait <= 0 {
		cfg.LockWait = DefaultLockWait
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	cfg.Log = cfg.Log.Named("audit")
	cfg.Geos = slices.Clone(cfg.Geos)
	return &Log{cfg: cfg}, nil
}

func (l *Log) redis(geo string) (*redis.Client, error) {
	if !slices.Contains(l.cfg.Geos, geo) {
		return nil, fmt.Errorf("audit: geography %q is not served here", geo)
	}
	return l.cfg.Redis[geo], nil
}

func keyPrefix(geo string) string { return "terroir:" + geo + ":review:audit:" }

// Hash returns the SHA-256, as 64 lowercase hex characters, of the
// canonical encoding of e: every field but Hash. Each item below is
// written as its decimal byte length, ":", its bytes and ",", in this
// order:
//
//  1. the version tag "terroir.audit.v1"
//  2. Geo
//  3. Seq in decimal
//  4. PrevHash
//  5. Actor
//  6. Action
//  7. Subject
//  8. At in UTC, RFC 3339 with fractional seconds to the nanosecond and
//     trailing zeros dropped (Go's time.RFC3339Nano), e.g.
//     "2025-03-15T10:02:11.5Z"
//  9. the number of Detail pairs in decimal
//  10. each Detail pair in byte-wise order of its key: the key, then the
//     value
//
// Strings are their UTF-8 bytes. The length prefixes make the encoding
// unambiguous, so no two different entries encode alike.
func Hash(e events.AuditEntry) string {
	h := sha256.New()
	var buf []byte
	item := func(s string) {
		buf = strconv.AppendInt(buf[:0], int64(len(s)), 10)
		buf = append(buf, ':')
		buf = append(buf, s...)
		buf = append(buf, ',')
		_, _ = h.Write(buf)
	}
	item("terroir.audit.v1")
	item(e.Geo)
	item(strconv.FormatInt(e.Seq, 10))
	item(e.PrevHash)
	item(e.Actor)
	item(string(e.Action))
	item(e.Subject)
	item(e.At.UTC().Format(time.RFC3339Nano))
	item(strconv.Itoa(len(e.Detail)))
	keys := make([]string, 0, len(e.Detail))
	for k := range e.Detail {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		item(k)
		item(e.Detail[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

var actions = []events.AuditAction{
	events.AuditAccessRequested, events.AuditAccessApproved, events.AuditAccessDenied,
	events.AuditLookup, events.AuditView, events.AuditDecision, events.AuditCaseOpened,
}

// check reports why e cannot be appended to geo's chain. It names fields,
// never their values.
func check(geo string, e events.AuditEntry) error {
	var errs []string
	if e.Geo != "" && e.Geo != geo {
		errs = append(errs, "geo differs from the chain's geography")
	}
	if e.Actor == "" {
		errs = append(errs, "actor is required")
	}
	if e.Subject == "" {
		errs = append(errs, "subject is required")
	}
	if !slices.Contains(actions, e.Action) {
		errs = append(errs, "action is not an audit action")
	}
	// JSON would replace invalid UTF-8, and the entry read back would no
	// longer match its hash.
	valid := utf8.ValidString(e.Actor) && utf8.ValidString(e.Subject)
	for k, v := range e.Detail {
		valid = valid && utf8.ValidString(k) && utf8.ValidString(v)
	}
	if !valid {
		errs = append(errs, "a field is not valid UTF-8")
	}
	if e.At.Year() < 0 || e.At.Year() > 9999 {
		errs = append(errs, "at is out of range")
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
}

// Append adds an entry to geo's chain (Seq, PrevHash, Hash and, when
// zero, At are filled in; At is kept in UTC) and returns it once it is on
// the topic. It waits at most LockWait for the geography's lock
// (ErrBusy), and refuses to append behind a broken chain (ErrBroken).
func (l *Log) Append(ctx context.Context, geo string, e events.AuditEntry) (events.AuditEntry, error) {
	rdb, err := l.redis(geo)
	if err != nil {
		return events.AuditEntry{}, err
	}
	if err := check(geo, e); err != nil {
		return events.AuditEntry{}, fmt.Errorf("audit of %s: %w", geo, err)
	}
	e.Geo = geo
	if e.At.IsZero() {
		e.At = l.cfg.Now()
	}
	e.At = e.At.UTC()
	if len(e.Detail) == 0 {
		e.Detail = nil // absent on the wire; the hash counts zero pairs either way
	}

	token, err := l.lock(ctx, rdb, geo)
	if err != nil {
		return events.AuditEntry{}, err
	}
	defer l.unlock(ctx, rdb, geo, token)

	h, err := l.head(ctx, rdb, geo, token)
	if err != nil {
		return events.AuditEntry{}, err
	}
	e.Seq = h.seq + 1
	e.PrevHash = h.hash
	e.Hash = Hash(e)
	pctx, cancel := context.WithTimeout(ctx, l.cfg.LockTTL/3)
	err = l.cfg.Bus.Publish(pctx, geo, bus.StreamAudit, bus.Meta{Key: geo}, e)
	cancel()
	if err != nil {
		// The entry may still have landed; the next append finds it on
		// the topic and takes it into the head.
		return events.AuditEntry{}, fmt.Errorf("audit of %s: appending entry %d: %w", geo, e.Seq, err)
	}
	// Nobody else appends while the lock is held, so the entry sits at the
	// end offset read under it.
	if err := l.setHead(ctx, rdb, geo, token, head{seq: e.Seq, hash: e.Hash, next: h.next + 1}); err != nil {
		l.cfg.Log.Warn("audit head not updated; the next append catches up from the topic",
			zap.String("geo", geo), zap.Int64("seq", e.Seq), zap.Error(err))
	}
	return e, nil
}

// lockRelease deletes the lock only when it still holds the caller's
// token, so an append whose lock lapsed never frees another's.
var lockRelease = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// headSet writes the head only while the caller holds the lock.
var headSet = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], 'seq', ARGV[2], 'hash', ARGV[3], 'next', ARGV[4])
return 1`)

func (l *Log) lock(ctx context.Context, rdb *redis.Client, geo string) (string, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	key := keyPrefix(geo) + "lock"
	deadline := time.Now().Add(l.cfg.LockWait)
	delay := 2 * time.Millisecond
	for {
		ok, err := rdb.SetNX(ctx, key, token, l.cfg.LockTTL).Result()
		if err != nil {
			return "", fmt.Errorf("audit of %s: taking the append lock: %w", geo, err)
		}
		if ok {
			return token, nil
		}
		if time.Now().Add(delay).After(deadline) {
			return "", fmt.Errorf("audit of %s: %w (waited %s)", geo, ErrBusy, l.cfg.LockWait)
		}
		t := time.NewTimer(delay + jitter(delay))
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("audit of %s: waiting for the append lock: %w", geo, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

func jitter(d time.Duration) time.Duration {
	var b [1]byte
	_, _ = rand.Read(b[:])
	return d * time.Duration(b[0]) / 256
}

func (l *Log) unlock(ctx context.Context, rdb *redis.Client, geo, token string) {
	// Released even when the caller's context has ended, so the next
	// append does not wait out the TTL.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := lockRelease.Run(rctx, rdb, []string{keyPrefix(geo) + "lock"}, token).Err(); err != nil {
		l.cfg.Log.Warn("releasing the audit lock failed; it lapses by itself", zap.String("geo", geo), zap.Error(err))
	}
}

// head is the chain's last entry and the topic offset after it.
type head struct {
	seq  int64
	hash string
	next int64
}

func (l *Log) setHead(ctx context.Context, rdb *redis.Client, geo, token string, h head) error {
	p := keyPrefix(geo)
	ok, err := headSet.Run(ctx, rdb, []string{p + "lock", p + "head"}, token, h.seq, h.hash, h.next).Int()
	if err != nil {
		return fmt.Errorf("audit of %s: writing the chain head: %w", geo, err)
	}
	if ok != 1 {
		return fmt.Errorf("audit of %s: writing the chain head: the append lock lapsed", geo)
	}
	return nil
}

// head returns geo's chain head, reconciled with the topic. The caller
// holds the lock.
func (l *Log) head(ctx context.Context, rdb *redis.Client, geo, token string) (head, error) {
	m, err := rdb.HGetAll(ctx, keyPrefix(geo)+"head").Result()
	if err != nil {
		return head{}, fmt.Errorf("audit of %s: reading the chain head: %w", geo, err)
	}
	end, err := l.cfg.Bus.EndOffset(ctx, geo, bus.StreamAudit, 0)
	if err != nil {
		return head{}, fmt.Errorf("audit of %s: %w", geo, err)
	}
	h, known, err := parseHead(m)
	if err != nil {
		return head{}, fmt.Errorf("audit of %s: %w", geo, err)
	}
	switch {
	case known && h.next == end:
		return h, nil
	case known && h.next > end:
		return head{}, fmt.Errorf("audit of %s: %w: the head in Redis (entry %d, offset %d) is ahead of the topic's end %d", geo, ErrBroken, h.seq, h.next, end)
	case known:
		h, err = l.catchUp(ctx, geo, h)
		if err != nil {
			return head{}, err
		}
		l.cfg.Log.Info("audit head caught up from the topic", zap.String("geo", geo), zap.Int64("seq", h.seq))
	default:
		h, err = l.rebuild(ctx, geo, end)
		if err != nil {
			return head{}, err
		}
		l.cfg.Log.Info("audit head rebuilt from the topic", zap.String("geo", geo), zap.Int64("seq", h.seq))
	}
	if err := l.setHead(ctx, rdb, geo, token, h); err != nil {
		return head{}, err
	}
	return h, nil
}

func parseHead(m map[string]string) (head, bool, error) {
	if len(m) == 0 {
		return head{}, false, nil
	}
	seq, err1 := strconv.ParseInt(m["seq"], 10, 64)
	next, err2 := strconv.ParseInt(m["next"], 10, 64)
	if err1 != nil || err2 != nil || seq < 0 || next < 0 {
		return head{}, false, errors.New("the chain head in Redis is malformed")
	}
	return head{seq: seq, hash: m["hash"], next: next}, true, nil
}

// catchUp takes into h the entries that reached the topic after it,
// checking each link.
func (l *Log) catchUp(ctx context.Context, geo string, h head) (head, error) {
	next, err := l.cfg.Bus.ReadFrom(ctx, geo, bus.StreamAudit, 0, h.next, func(d *bus.Delivery) error {
		var e events.AuditEntry
		if err := d.Decode(ctx, &e); err != nil {
			return fmt.Errorf("%w: offset %d does not hold an audit entry: %w", ErrBroken, d.Record.Offset, err)
		}
		if b := link(geo, h.seq, h.hash, e); b != nil {
			return fmt.Errorf("%w at offset %d, seq %d: %s", ErrBroken, d.Record.Offset, b.Seq, b.Reason)
		}
		h.seq, h.hash = e.Seq, e.Hash
		return nil
	})
	if err != nil {
		return head{}, fmt.Errorf("audit of %s: catching up from the topic: %w", geo, err)
	}
	h.next = next
	return h, nil
}

// rebuild finds the head from the topic alone: its last entry, or, when
// the last offset holds no record, the whole chain.
func (l *Log) rebuild(ctx context.Context, geo string, end int64) (head, error) {
	if end == 0 {
		return head{}, nil
	}
	d, err := l.cfg.Bus.ReadAt(ctx, geo, bus.StreamAudit, 0, end-1)
	switch {
	case err == nil:
		var e events.AuditEntry
		if err := d.Decode(ctx, &e); err != nil {
			return head{}, fmt.Errorf("audit of %s: %w: offset %d does not hold an audit entry: %w", geo, ErrBroken, end-1, err)
		}
		if e.Geo != geo || e.Seq < 1 || Hash(e) != e.Hash {
			return head{}, fmt.Errorf("audit of %s: %w: the last entry (offset %d) does not hold", geo, ErrBroken, end-1)
		}
		return head{seq: e.Seq, hash: e.Hash, next: end}, nil
	case errors.Is(err, bus.ErrNoRecord):
		h, err := l.catchUp(ctx, geo, head{})
		if err != nil {
			return head{}, err
		}
		return h, nil
	default:
		return head{}, fmt.Errorf("audit of %s: reading the last entry: %w", geo, err)
	}
}

// Recent returns up to n of geo's latest entries, newest first.
func (l *Log) Recent(ctx context.Context, geo string, n int) ([]events.AuditEntry, error) {
	if _, err := l.redis(geo); err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, nil
	}
	end, err := l.cfg.Bus.EndOffset(ctx, geo, bus.StreamAudit, 0)
	if err != nil {
		return nil, fmt.Errorf("audit of %s: %w", geo, err)
	}
	out, err := read(ctx, l.cfg.Bus, geo, max(0, end-int64(n)))
	if err != nil {
		return nil, err
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	slices.Reverse(out)
	return out, nil
}

func read(ctx context.Context, b *bus.Bus, geo string, from int64) ([]events.AuditEntry, error) {
	var out []events.AuditEntry
	_, err := b.ReadFrom(ctx, geo, bus.StreamAudit, 0, from, func(d *bus.Delivery) error {
		var e events.AuditEntry
		if err := d.Decode(ctx, &e); err != nil {
			return fmt.Errorf("offset %d: %w", d.Record.Offset, err)
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the audit chain of %s: %w", geo, err)
	}
	return out, nil
}

// Break is the first broken link of a chain.
type Break struct {
	Seq    int64  // the entry at fault (or the expected Seq of a gap)
	Reason string // e.g. "hash does not match the entry", "prev_hash does not match entry 41", "missing entry"
}

// Verify checks a chain read in order and returns its first broken link,
// or nil when every link holds. The chain starts at Seq 1 and every entry
// has the first entry's geography.
func Verify(entries []events.AuditEntry) *Break {
	if len(entries) == 0 {
		return nil
	}
	return VerifyIn(entries[0].Geo, entries)
}

// VerifyIn is Verify for the chain of geo: every entry must name geo.
func VerifyIn(geo string, entries []events.AuditEntry) *Break {
	var seq int64
	var prev string
	for _, e := range entries {
		if b := link(geo, seq, prev, e); b != nil {
			return b
		}
		seq, prev = e.Seq, e.Hash
	}
	return nil
}

// link checks that e follows the entry prevSeq with hash prevHash in geo's
// chain (prevSeq 0: e is the first entry).
func link(geo string, prevSeq int64, prevHash string, e events.AuditEntry) *Break {
	want := prevSeq + 1
	switch {
	case e.Seq > want:
		return &Break{Seq: want, Reason: "missing entry"}
	case e.Seq < want:
		return &Break{Seq: e.Seq, Reason: fmt.Sprintf("entry %d repeated (or out of order) after entry %d", e.Seq, prevSeq)}
	case e.Geo != geo:
		return &Break{Seq: e.Seq, Reason: fmt.Sprintf("entry belongs to geography %q, not %q", e.Geo, geo)}
	case Hash(e) != e.Hash:
		return &Break{Seq: e.Seq, Reason: "hash does not match the entry"}
	case e.PrevHash != prevHash && prevSeq == 0:
		return &Break{Seq: e.Seq, Reason: "prev_hash of the first entry is not empty"}
	case e.PrevHash != prevHash:
		return &Break{Seq: e.Seq, Reason: fmt.Sprintf("prev_hash does not match entry %d", prevSeq)}
	}
	return nil
}

// ReadChain reads geo's whole chain from its topic, in order.
func ReadChain(ctx context.Context, b *bus.Bus, geo string) ([]events.AuditEntry, error) {
	return read(ctx, b, geo, 0)
}

// VerifyCommand reads geo's chain and prints whether every link holds:
// "audit chain of <geo>: N entries, every link holds", or "audit chain of
// <geo>: first broken link at seq K: <reason>". ok reports the verdict;
// err is set only when the chain could not be read or printed.
func VerifyCommand(ctx context.Context, b *bus.Bus, geo string, out io.Writer) (ok bool, err error) {
	chain, err := ReadChain(ctx, b, geo)
	if err != nil {
		return false, err
	}
	if brk := VerifyIn(geo, chain); brk != nil {
		_, err = fmt.Fprintf(out, "audit chain of %s: first broken link at seq %d: %s\n", geo, brk.Seq, brk.Reason)
		return false, err
	}
	_, err = fmt.Fprintf(out, "audit chain of %s: %d entries, every link holds\n", geo, len(chain))
	return true, err
}
