// Package store keeps a geography's abuse-monitoring records reachable for
// review: it consumes the geography's abuse log and indexes each record by
// resource and request ID in that geography's Redis, pointing at the
// sealed record on the topic. Lookups are checked against the resource and
// never return anything older than Retention.
//
// The index holds positions and times only, never content: for each
// request one Redis hash,
//
//	terroir:<geo>:review:rec:<resource>:<request ID>
//
// whose fields are the "<partition>:<offset>" of each record of the request
// on terroir.<geo>.abuse-log (content safety writes one record per request
// holding the prompt and the output; earlier producers wrote a prompt part
// and an output part) and whose values are the parts' record
// timestamps in Unix milliseconds. The key expires Retention after its
// newest part. Indexing a part twice writes the same field with the same
// value, so redelivery changes nothing. Ingest does not open the sealed
// records: everything it needs is in the headers and the record
// timestamp. Lookup reads the parts back from the topic, opens them under
// the geography's abuse key, checks them against the resource, the
// request ID and the clock, and joins them.
package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
)

// Retention is how long a record can be looked up (promise 6).
const Retention = 30 * 24 * time.Hour

// Group is the consumer group that indexes the abuse logs.
const Group = "review-store"

// maxParts bounds the records read for one request. A request has one
// record (or, from earlier producers, a prompt part and an output part);
// a producer that retried, or content safety reading a stream again after
// a rebalance, may have appended a copy. Copies join into the same record.
// Anything beyond is not a request's record and is not read.
const maxParts = 8

var (
	// ErrNotFound: no record of that request ID for that resource within
	// Retention (unknown ID, wrong resource, expired: indistinguishable).
	ErrNotFound = errors.New("no record for this request ID")
	// ErrNoContentStored: the resource's content logging is off.
	ErrNoContentStored = errors.New("no content stored for this resource")
)

// Record is one request's abuse-monitoring record: its one record, or
// both parts of an earlier producer's joined.
// A request whose prompt was blocked has no output part: Output and
// ContentFilterResults are then empty.
type Record struct {
	RequestID            string
	Resource             string
	HomeGeo              string
	ProcessingGeo        string
	Deployment           string
	Operation            events.Operation
	Prompt               json.RawMessage
	Output               json.RawMessage
	PromptFilterResults  json.RawMessage
	ContentFilterResults json.RawMessage
	// CreatedAt is when the earliest part was written.
	CreatedAt time.Time
}

// Config configures a store.
type Config struct {
	Bus *bus.Bus
	// Redis holds the client of each geography; every geography of Geos
	// needs one. A geography's records are indexed only in its own Redis.
	Redis map[string]*redis.Client // per geography
	State *control.State
	// Geos are the geographies whose abuse logs are indexed and looked up.
	Geos []string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Log defaults to a no-op logger.
	Log *zap.Logger
	// Consumer tunes the consumer group (concurrency, commit interval,
	// drain timeout); its Group, Streams, Geos and Handler are set by Run.
	Consumer bus.ConsumerConfig
}

// Store indexes and looks up records.
type Store struct{ cfg Config }

// New checks cfg, reporting every problem at once, and returns a store.
// It starts nothing: Run indexes, Lookup reads.
func New(cfg Config) (*Store, error) {
	var errs []error
	if cfg.Bus == nil {
		errs = append(errs, errors.New("a bus is required"))
	}
	if cfg.State == nil {
		errs = append(errs, errors.New("a control-plane state is required"))
	}
	if len(cfg.Geos) == 0 {
		errs = append(errs, errors.New("at least one geography is required"))
	}
	seen := map[string]bool{}
	for _, g := range cfg.Geos {
		switch {
		case g == "" || strings.Contains(g, ":"):
			errs = append(errs, fmt.Errorf("invalid geography %q", g))
		case seen[g]:
			errs = append(errs, fmt.Errorf("geography %s listed twice", g))
		case cfg.Redis[g] == nil:
			errs = append(errs, fmt.Errorf("no Redis client for geography %s", g))
		}
		seen[g] = true
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("review store: %w", err)
	}
	cfg.Geos = slices.Clone(cfg.Geos)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	cfg.Log = cfg.Log.Named("store")
	return &Store{cfg: cfg}, nil
}

// Run consumes the abuse logs of cfg.Geos until ctx ends, then drains and
// commits what it indexed.
func (s *Store) Run(ctx context.Context) error {
	cc := s.cfg.Consumer
	cc.Group = Group
	cc.Streams = []string{bus.StreamAbuseLog}
	cc.Geos = s.cfg.Geos
	cc.Handler = s.index
	c, err := s.cfg.Bus.NewConsumer(cc)
	if err != nil {
		return fmt.Errorf("review store: %w", err)
	}
	if err := c.Run(ctx); err != nil {
		return fmt.Errorf("review store: %w", err)
	}
	return nil
}

// Key returns the Redis key of the index entry of requestID of resource
// in geo. Resource names never contain a colon, so the key is unambiguous.
func Key(geo, resource, requestID string) string {
	return "terroir:" + geo + ":review:rec:" + resource + ":" + requestID
}

// index adds one part of a record to its geography's index. It reads only
// the headers and the record timestamp.
func (s *Store) index(ctx context.Context, d *bus.Delivery) error {
	m := d.Meta
	where := fmt.Sprintf("%s/%d@%d", d.Record.Topic, d.Record.Partition, d.Record.Offset)
	if !events.Accepts(events.TypeAbuseRecord, m.Type) {
		return bus.Permanent(fmt.Errorf("indexing %s: event type %s is not an abuse record", where, m.Type))
	}
	if m.RequestID == "" || !validResource(m.Resource) {
		return bus.Permanent(fmt.Errorf("indexing %s: request ID or resource missing or malformed", where))
	}
	// The bus refuses to publish an abuse record outside its home
	// geography; one that got there anyway is not indexed anywhere.
	if m.HomeGeo != d.Geo {
		return bus.Permanent(fmt.Errorf("indexing %s of request %s: home geography %q is not the log's geography %s", where, m.RequestID, m.HomeGeo, d.Geo))
	}
	rdb := s.cfg.Redis[d.Geo]
	if rdb == nil {
		return bus.Permanent(fmt.Errorf("indexing %s: no Redis for geography %q", where, d.Geo))
	}
	at := d.Record.Timestamp
	expireAt := at.Add(Retention)
	if !s.cfg.Now().Before(expireAt) {
		return nil // already past retention: nothing to keep
	}
	key := Key(d.Geo, m.Resource, m.RequestID)
	field := strconv.FormatInt(int64(d.Record.Partition), 10) + ":" + strconv.FormatInt(d.Record.Offset, 10)
	ms := expireAt.UnixMilli()
	// One round trip, applied atomically: the field, then the key's
	// expiry set when it has none (a new key) and raised when this part is
	// newer than every other, so the entry lives Retention past its
	// newest part. Both expiry commands are no-ops on a redelivery.
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, field, strconv.FormatInt(at.UnixMilli(), 10))
		p.Do(ctx, "pexpireat", key, ms, "nx")
		p.Do(ctx, "pexpireat", key, ms, "gt")
		return nil
	})
	if err != nil {
		return fmt.Errorf("indexing %s of request %s in %s: %w", where, m.RequestID, d.Geo, err)
	}
	return nil
}

// validResource reports whether name can be part of an index key.
// Resource names are letters, digits and hyphens.
func validResource(name string) bool {
	return name != "" && !strings.ContainsAny(name, ":*?[]\\")
}

// part is one indexed part of a record.
type part struct {
	partition int32
	offset    int64
	at        time.Time
}

// Lookup returns the record of requestID of resource kept in geo.
//
// It returns ErrNoContentStored when the resource's content logging is
// off, and ErrNotFound when the resource is unknown, the request ID is
// unknown or belongs to another resource, or the record is older than
// Retention by the clock (by its index entry, its record timestamp or the
// time written in it). Errors carry IDs only.
func (s *Store) Lookup(ctx context.Context, geo, resource, requestID string) (Record, error) {
	if !slices.Contains(s.cfg.Geos, geo) {
		return Record{}, fmt.Errorf("looking up request %s of %s: geography %q is not served here", requestID, resource, geo)
	}
	res, ok := s.cfg.State.Resource(resource)
	if !ok || requestID == "" || !validResource(resource) {
		return Record{}, ErrNotFound
	}
	if !res.ContentLogging {
		return Record{}, ErrNoContentStored
	}
	now := s.cfg.Now()
	fields, err := s.cfg.Redis[geo].HGetAll(ctx, Key(geo, resource, requestID)).Result()
	if err != nil {
		return Record{}, fmt.Errorf("looking up request %s of %s in %s: %w", requestID, resource, geo, err)
	}
	parts := make([]part, 0, len(fields))
	for f, v := range fields {
		p, ok := parsePart(f, v)
		if !ok {
			s.cfg.Log.Warn("malformed index entry", zap.String("geo", geo), zap.String("resource", resource), zap.String("request_id", requestID))
			continue
		}
		if live(p.at, now) {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return Record{}, ErrNotFound
	}
	slices.SortFunc(parts, func(a, b part) int {
		return cmp.Or(cmp.Compare(a.partition, b.partition), cmp.Compare(a.offset, b.offset))
	})
	parts = parts[:min(len(parts), maxParts)]

	recs := make([]*events.AbuseRecord, len(parts))
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Go(func() { recs[i], errs[i] = s.read(ctx, geo, resource, requestID, p, now) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Record{}, fmt.Errorf("looking up request %s of %s in %s: %w", requestID, resource, geo, err)
	}
	out, ok := join(recs)
	if !ok {
		return Record{}, ErrNotFound
	}
	out.RequestID, out.Resource, out.HomeGeo = requestID, resource, geo
	return out, nil
}

func parsePart(field, value string) (part, bool) {
	ps, offs, ok := strings.Cut(field, ":")
	if !ok {
		return part{}, false
	}
	p, err1 := strconv.ParseInt(ps, 10, 32)
	o, err2 := strconv.ParseInt(offs, 10, 64)
	ms, err3 := strconv.ParseInt(value, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || p < 0 || o < 0 {
		return part{}, false
	}
	return part{partition: int32(p), offset: o, at: time.UnixMilli(ms)}, true
}

// live reports whether something written at t may still be returned at
// now.
func live(t, now time.Time) bool { return now.Before(t.Add(Retention)) }

// read reads one part back from the topic and opens it. A part that is no
// longer on the topic, or is not this request's record of this resource,
// or is past retention, is nil: it is not part of the answer.
func (s *Store) read(ctx context.Context, geo, resource, requestID string, p part, now time.Time) (*events.AbuseRecord, error) {
	d, err := s.cfg.Bus.ReadAt(ctx, geo, bus.StreamAbuseLog, p.partition, p.offset)
	if errors.Is(err, bus.ErrNoRecord) {
		return nil, nil // expired with the topic's retention
	}
	if err != nil {
		return nil, err
	}
	skip := func(why string) (*events.AbuseRecord, error) {
		s.cfg.Log.Warn("index entry does not match its record", zap.String("geo", geo), zap.String("resource", resource),
			zap.String("request_id", requestID), zap.Int32("partition", p.partition), zap.Int64("offset", p.offset), zap.String("reason", why))
		return nil, nil
	}
	if !events.Accepts(events.TypeAbuseRecord, d.Meta.Type) {
		return skip("not an abuse record")
	}
	if d.Meta.RequestID != requestID || d.Meta.Resource != resource || d.Meta.HomeGeo != geo {
		return skip("headers name another request, resource or geography")
	}
	if !live(d.Record.Timestamp, now) {
		return nil, nil
	}
	var rec events.AbuseRecord
	if err := d.Decode(ctx, &rec); err != nil {
		return nil, err
	}
	if rec.RequestID != requestID || rec.Resource != resource || rec.HomeGeo != geo {
		return skip("payload names another request, resource or geography")
	}
	if !live(rec.CreatedAt, now) {
		return nil, nil
	}
	return &rec, nil
}

// join merges the parts of one request, in topic order; the first part
// that has a field gives it. It reports false when no part is left.
func join(parts []*events.AbuseRecord) (Record, bool) {
	var out Record
	found := false
	for _, r := range parts {
		if r == nil {
			continue
		}
		if !found || r.CreatedAt.Before(out.CreatedAt) {
			out.CreatedAt = r.CreatedAt
		}
		found = true
		out.ProcessingGeo = cmp.Or(out.ProcessingGeo, r.ProcessingGeo)
		out.Deployment = cmp.Or(out.Deployment, r.Deployment)
		out.Operation = cmp.Or(out.Operation, r.Operation)
		out.Prompt = firstRaw(out.Prompt, r.Prompt)
		out.Output = firstRaw(out.Output, r.Output)
		out.PromptFilterResults = firstRaw(out.PromptFilterResults, r.PromptFilterResults)
		out.ContentFilterResults = firstRaw(out.ContentFilterResults, r.ContentFilterResults)
	}
	return out, found
}

func firstRaw(have, next json.RawMessage) json.RawMessage {
	if len(have) > 0 {
		return have
	}
	return next
}
