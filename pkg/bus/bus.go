// Package bus is Terroir's Kafka layer, on franz-go: one client per
// geography (each geography may be its own cluster), topics named
// terroir.<geo>.<stream>, records keyed by request ID with their metadata
// in headers, and payloads sealed under envelope encryption whenever their
// event type carries customer content. On top of it: a consumer-group
// runner (handle, mark, commit; failures retried until they heal with the
// partition paused, records that can never succeed to the dead-letter
// topic), request/reply that reaches exactly the waiting instance,
// materialised compacted tables, and topic provisioning.
package bus

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/keys"
)

// Record headers. Every record carries its event type and version; the
// others are set when known.
const (
	HeaderRequestID    = "terroir-request-id"
	HeaderResource     = "terroir-resource"
	HeaderHomeGeo      = "terroir-home-geo"
	HeaderDeployment   = "terroir-deployment"
	HeaderEventType    = "terroir-event-type"
	HeaderEventVersion = "terroir-event-version"
	HeaderReplyTo      = "terroir-reply-to"
	HeaderKeyID        = "terroir-key-id"
	HeaderSeq          = "terroir-seq"
	HeaderFinal        = "terroir-final"
	HeaderReplyBy      = "terroir-reply-by"
)

// Meta is the metadata of a record, carried in its headers.
type Meta struct {
	// Key is the record key; it defaults to RequestID.
	Key        string
	RequestID  string
	Resource   string
	HomeGeo    string
	Deployment string
	// ReplyTo is where replies go: "<topic>/<partition>/<instance>".
	ReplyTo string
	// Type is the event type; Publish sets it from the event.
	Type events.Type
	// KeyID names the data key that sealed the payload; set by the bus.
	KeyID string
	// Seq and Final order the records of a reply stream.
	Seq   int
	Final bool
	// ReplyBy is when the caller stops waiting for the answer (set by
	// Requester.Request from its context's deadline, in milliseconds);
	// zero for work nobody waits on, such as batch lines. It travels
	// with the request along its path: see Delivery.Expired.
	ReplyBy time.Time
}

// Config configures a Bus.
type Config struct {
	// Namespace is the first part of topic names; default "terroir".
	Namespace string
	// Brokers lists the bootstrap servers of each geography the bus joins.
	Brokers map[string][]string
	// InstanceID names this process; replies find it by this name.
	InstanceID string
	// Topics, when set, are provisioned in every geography at start-up.
	Topics *TopicDefs
	// Replication is the replication factor of provisioned topics; default 1.
	Replication int16
	// KeyWrapper holds the key-encryption keys; required.
	KeyWrapper keys.KeyWrapper
	// KeyOptions configure the data-key manager: which resources may
	// have keys (keys.WithAdmission) and when keys roll
	// (keys.WithRotation).
	KeyOptions []keys.Option
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// Registerer, when set, receives the bus metrics.
	Registerer prometheus.Registerer
	// Security says how the clients of each geography reach its cluster
	// (TLS, SASL); a geography without an entry connects in plaintext.
	Security map[string]Security
	// ClientOpts are added to every franz-go client (tests).
	ClientOpts []kgo.Opt
	// Linger is how long the producer of the request path waits to batch
	// records (default 0: a reply waits on every hop); SideLinger the
	// same for the streams nobody waits on (safety signals, abuse log,
	// usage, capacity; services set TERROIR_KAFKA_SIDE_LINGER, default
	// DefaultSideLinger). 0 sends at once.
	Linger, SideLinger time.Duration
	// SessionTimeout is how long a consumer group waits for a member
	// that stopped heartbeating before giving its partitions to the
	// others (default 45 s, franz-go's and Kafka's); the broker's
	// group.min.session.timeout.ms (6 s by default) bounds it from below.
	SessionTimeout time.Duration
}

// batched are the streams whose records nobody waits on to answer a
// request: they are produced in batches, lingering up to Config.SideLinger, so a
// thousand requests a second cost tens of produce requests rather than
// thousands. Consumers' handlers hand them to Delivery.After, so the
// commit waits for the acknowledgement and the handler does not.
var batched = map[string]bool{StreamSafetySignals: true, StreamAbuseLog: true, StreamUsage: true, StreamCapacity: true}

// DefaultSideLinger is how long side records wait to travel together. At
// 200 requests a second, 100 ms puts twenty requests' records in one
// produce request (and one fetch of each reader) where 5 ms put one.
const DefaultSideLinger = 100 * time.Millisecond

// Bus is a connection to the Kafka cluster of every configured geography.
type Bus struct {
	ns       string
	instance string
	log      *zap.Logger
	cfg      Config
	prod     map[string]*kgo.Client
	batch    map[string]*kgo.Client // streams nobody waits on, batched
	adm      map[string]*kadm.Client
	secure   map[string][]kgo.Opt // TLS and SASL options per geography
	keyStore *KeyStore
	keys     *keys.Manager
	metrics  *metrics
	lead     leaders

	closeOnce sync.Once
}

// New connects to every geography, provisions topics when cfg.Topics is
// set, and starts materialising the data-key tables.
func New(ctx context.Context, cfg Config) (*Bus, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("bus: no geography configured")
	}
	if cfg.KeyWrapper == nil {
		return nil, errors.New("bus: a key wrapper is required")
	}
	if cfg.InstanceID == "" {
		return nil, errors.New("bus: an instance ID is required")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.Replication == 0 {
		cfg.Replication = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	b := &Bus{
		ns: cfg.Namespace, instance: cfg.InstanceID, log: cfg.Logger.Named("bus"), cfg: cfg,
		prod: map[string]*kgo.Client{}, batch: map[string]*kgo.Client{}, adm: map[string]*kadm.Client{},
		secure: map[string][]kgo.Opt{}, metrics: newMetrics(cfg.Registerer),
	}
	for g, sec := range cfg.Security {
		opts, err := sec.opts()
		if err != nil {
			return nil, fmt.Errorf("bus: security of %s: %w", g, err)
		}
		b.secure[g] = opts
	}
	producer := func(g string, linger time.Duration) (*kgo.Client, error) {
		return kgo.NewClient(b.clientOpts(g,
			kgo.ProducerLinger(linger),
			kgo.RequiredAcks(kgo.AllISRAcks()),
			kgo.RecordPartitioner(partitioner{ns: cfg.Namespace}),
			kgo.ProducerBatchCompression(kgo.NoCompression()),
			// Topics are provisioned by this very client at start-up; a
			// lookup of one just created must not wait for the default
			// 5 s between metadata refreshes.
			kgo.MetadataMinAge(250*time.Millisecond),
		)...)
	}
	for _, g := range b.Geos() {
		// Latency over batching: a reply waits on every hop.
		cl, err := producer(g, cfg.Linger)
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("bus: client for %s: %w", g, err)
		}
		b.prod[g] = cl
		if b.batch[g], err = producer(g, cfg.SideLinger); err != nil {
			b.Close()
			return nil, fmt.Errorf("bus: client for %s: %w", g, err)
		}
		b.adm[g] = kadm.NewClient(cl)
		if cfg.Topics != nil {
			if err := Provision(ctx, b.adm[g], cfg.Namespace, g, cfg.Topics, cfg.Replication); err != nil {
				b.Close()
				return nil, fmt.Errorf("bus: %w", err)
			}
		}
	}
	ks, err := newKeyStore(b)
	if err != nil {
		b.Close()
		return nil, err
	}
	b.keyStore = ks
	b.keys, err = keys.NewManager(cfg.KeyWrapper, ks, cfg.KeyOptions...)
	if err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (b *Bus) clientOpts(geo string, extra ...kgo.Opt) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(b.cfg.Brokers[geo]...),
		kgo.ClientID("terroir-" + b.instance),
		kgo.WithLogger(kzapLogger{b.log.With(zap.String("geo", geo))}),
	}
	opts = append(opts, b.secure[geo]...)
	opts = append(opts, b.cfg.ClientOpts...)
	return append(opts, extra...)
}

// Geos returns the geographies the bus is connected to, sorted.
func (b *Bus) Geos() []string { return slices.Sorted(maps.Keys(b.cfg.Brokers)) }

// Namespace returns the topic namespace.
func (b *Bus) Namespace() string { return b.ns }

// InstanceID returns the name of this process on the bus.
func (b *Bus) InstanceID() string { return b.instance }

// Topic returns the topic of stream in geo.
func (b *Bus) Topic(geo, stream string) string { return TopicName(b.ns, geo, stream) }

// KeyStore returns the Kafka-backed store of wrapped data keys.
func (b *Bus) KeyStore() *KeyStore { return b.keyStore }

// Keys returns the data-key manager (for shredding and key lookups).
func (b *Bus) Keys() *keys.Manager { return b.keys }

// Admin returns the admin client of geo.
func (b *Bus) Admin(geo string) (*kadm.Client, error) {
	a, ok := b.adm[geo]
	if !ok {
		return nil, fmt.Errorf("bus: not connected to geography %q", geo)
	}
	return a, nil
}

// Ready checks that every geography's cluster answers and that the data-key
// tables have caught up with their topics.
func (b *Bus) Ready(ctx context.Context) error {
	for _, g := range b.Geos() {
		if err := b.prod[g].Ping(ctx); err != nil {
			return fmt.Errorf("kafka of %s: %w", g, err)
		}
	}
	return b.keyStore.Sync(ctx)
}

// Close flushes pending records and closes every client. It is idempotent.
func (b *Bus) Close() {
	b.closeOnce.Do(func() {
		if b.keyStore != nil {
			b.keyStore.Close()
		}
		for _, cl := range append(slices.Collect(maps.Values(b.prod)), slices.Collect(maps.Values(b.batch))...) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = cl.Flush(ctx)
			cancel()
			cl.Close()
		}
	})
}

// Publish seals ev as its event type requires and produces it to stream in
// geo, waiting for the write to be acknowledged by all in-sync replicas.
// Payloads of content-bearing types are always encrypted, so RequestID,
// Resource and HomeGeo must be set: under the resource's data key of geo
// (each geography wraps its own keys of a resource, so a request
// processed outside its home geography can be read there, and shredding
// the resource shreds them all), or for abuse-monitoring records under
// geo's abuse key. For a resource that was deleted (its keys shredded) or
// does not exist, nothing is produced and the error wraps
// keys.ErrResourceGone.
func (b *Bus) Publish(ctx context.Context, geo, stream string, meta Meta, ev events.Event) error {
	return b.PublishAsync(ctx, geo, stream, meta, ev).Wait()
}

// PublishAsync is Publish without the wait: the returned Sending reports
// the acknowledgement. Several records sent this way travel together, with
// no goroutine per record.
func (b *Bus) PublishAsync(ctx context.Context, geo, stream string, meta Meta, ev events.Event) *Sending {
	rec, err := b.record(ctx, geo, b.Topic(geo, stream), meta, ev)
	if err != nil {
		return sendFailed(err)
	}
	return b.produceAsync(ctx, geo, stream, rec)
}

// Sending is a record on its way to the cluster.
type Sending struct {
	done      chan struct{}
	err       error
	partition int32
	offset    int64

	// what a consumer needs to produce the record again (Delivery.After);
	// rec is nil when the record was never built
	geo, stream string
	rec         *kgo.Record

	mu   sync.Mutex // orders then against closing done
	then []func()
}

// finish records the outcome (set before) and runs what waits on it.
func (s *Sending) finish() {
	s.mu.Lock()
	close(s.done)
	then := s.then
	s.then = nil
	s.mu.Unlock()
	for _, f := range then {
		f()
	}
}

// onDone runs f once the send has finished: at once if it has, otherwise
// on the producer's callback (so f must be quick and must not wait).
func (s *Sending) onDone(f func()) {
	s.mu.Lock()
	select {
	case <-s.done:
	default:
		s.then = append(s.then, f)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	f()
}

// Written returns the partition and offset the record was written at,
// once Wait has returned nil.
func (s *Sending) Written() (partition int32, offset int64) {
	<-s.done
	return s.partition, s.offset
}

// Done is closed once the broker acknowledged the record or the send
// failed; Wait then returns at once.
func (s *Sending) Done() <-chan struct{} { return s.done }

// Wait waits for the record's acknowledgement and returns its error.
func (s *Sending) Wait() error {
	<-s.done
	return s.err
}

func sendFailed(err error) *Sending {
	s := &Sending{done: make(chan struct{}), err: err}
	close(s.done)
	return s
}

// WaitAll waits for every record and returns their errors joined.
func WaitAll(sends ...*Sending) error {
	var errs []error
	for _, s := range sends {
		if err := s.Wait(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Tombstone produces a record with a nil value for key, which deletes the
// key from a compacted stream.
func (b *Bus) Tombstone(ctx context.Context, geo, stream, key string) error {
	return b.produce(ctx, geo, stream, &kgo.Record{Topic: b.Topic(geo, stream), Key: []byte(key)})
}

func (b *Bus) produce(ctx context.Context, geo, stream string, rec *kgo.Record) error {
	return b.produceAsync(ctx, geo, stream, rec).Wait()
}

func (b *Bus) produceAsync(ctx context.Context, geo, stream string, rec *kgo.Record) *Sending {
	cl, ok := b.prod[geo]
	if batched[stream] {
		cl, ok = b.batch[geo]
	}
	if !ok {
		return sendFailed(fmt.Errorf("publishing to %s: not connected to geography %q", stream, geo))
	}
	s := &Sending{done: make(chan struct{}), geo: geo, stream: stream, rec: rec}
	start := time.Now()
	cl.Produce(ctx, rec, func(r *kgo.Record, err error) {
		if err != nil {
			b.metrics.produceErrors.WithLabelValues(geo, stream).Inc()
			s.err = fmt.Errorf("publishing to %s: %w", r.Topic, err)
		} else {
			s.partition, s.offset = r.Partition, r.Offset
			b.metrics.produced.WithLabelValues(geo, stream).Inc()
			b.metrics.produceSeconds.WithLabelValues(geo, stream).Observe(time.Since(start).Seconds())
		}
		s.finish()
	})
	return s
}

// record builds the Kafka record of ev: headers from meta and the payload
// sealed according to the event type's registered protection.
func (b *Bus) record(ctx context.Context, geo, topic string, meta Meta, ev events.Event) (*kgo.Record, error) {
	if ev == nil {
		return nil, errors.New("publishing: nil event")
	}
	meta.Type = ev.EventType()
	spec, ok := events.Lookup(meta.Type)
	if !ok {
		return nil, fmt.Errorf("publishing to %s: event type %s is not registered", topic, meta.Type)
	}
	plain, err := jsonv2.Marshal(ev, eventJSON)
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", meta.Type, err)
	}
	value := plain
	switch spec.Protection {
	case events.Plain:
		meta.KeyID = ""
	case events.ResourceKey, events.AbuseKey:
		if meta.Resource == "" || meta.HomeGeo == "" || meta.RequestID == "" {
			return nil, fmt.Errorf("publishing %s to %s: request ID, resource and home geography are required to encrypt it", meta.Type, topic)
		}
		var k *keys.DataKey
		if spec.Protection == events.AbuseKey {
			if geo != meta.HomeGeo {
				return nil, fmt.Errorf("publishing %s to %s: abuse-monitoring records stay in the home geography %s", meta.Type, topic, meta.HomeGeo)
			}
			k, err = b.keys.AbuseKey(ctx, geo)
		} else {
			k, err = b.keys.ForResource(ctx, geo, meta.Resource)
		}
		if err != nil {
			return nil, fmt.Errorf("publishing %s to %s: %w", meta.Type, topic, err)
		}
		value = k.Seal(plain, keys.AAD(meta.RequestID, meta.Resource, meta.Type.String()))
		clear(plain)
		meta.KeyID = k.ID
	default:
		return nil, fmt.Errorf("publishing %s: unknown protection %v", meta.Type, spec.Protection)
	}
	key := meta.Key
	if key == "" {
		key = meta.RequestID
	}
	return &kgo.Record{Topic: topic, Key: []byte(key), Value: value, Headers: meta.headers()}, nil
}

func (m Meta) headers() []kgo.RecordHeader {
	h := make([]kgo.RecordHeader, 0, 10)
	add := func(k, v string) {
		if v != "" {
			h = append(h, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
	}
	add(HeaderEventType, m.Type.Name)
	add(HeaderEventVersion, strconv.Itoa(m.Type.Version))
	add(HeaderRequestID, m.RequestID)
	add(HeaderResource, m.Resource)
	add(HeaderHomeGeo, m.HomeGeo)
	add(HeaderDeployment, m.Deployment)
	add(HeaderReplyTo, m.ReplyTo)
	add(HeaderKeyID, m.KeyID)
	if m.Seq != 0 || m.Final || m.ReplyTo != "" {
		add(HeaderSeq, strconv.Itoa(m.Seq))
	}
	if m.Final {
		add(HeaderFinal, "1")
	}
	if !m.ReplyBy.IsZero() {
		add(HeaderReplyBy, strconv.FormatInt(m.ReplyBy.UnixMilli(), 10))
	}
	return h
}

// MetaOf reads the metadata headers of a record.
func MetaOf(r *kgo.Record) Meta {
	m := Meta{Key: string(r.Key)}
	for _, h := range r.Headers {
		v := string(h.Value)
		switch h.Key {
		case HeaderEventType:
			m.Type.Name = v
		case HeaderEventVersion:
			m.Type.Version, _ = strconv.Atoi(v)
		case HeaderRequestID:
			m.RequestID = v
		case HeaderResource:
			m.Resource = v
		case HeaderHomeGeo:
			m.HomeGeo = v
		case HeaderDeployment:
			m.Deployment = v
		case HeaderReplyTo:
			m.ReplyTo = v
		case HeaderKeyID:
			m.KeyID = v
		case HeaderSeq:
			m.Seq, _ = strconv.Atoi(v)
		case HeaderFinal:
			m.Final = v == "1"
		case HeaderReplyBy:
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms > 0 {
				m.ReplyBy = time.UnixMilli(ms)
			}
		}
	}
	return m
}

// Delivery is one consumed record with its metadata.
type Delivery struct {
	Geo    string
	Stream string
	Meta   Meta
	Record *kgo.Record
	bus    *Bus
	// consumed is set for a consumer's handler, which settles after
	consumed bool
	after    []*Sending
}

// Expired reports whether the record's caller stopped waiting for its
// answer (Meta.ReplyBy has passed), and counts it in
// terroir_bus_expired_total when so: a handler that gets true skips the
// work, as there is nobody to answer, and an overloaded stack that went on
// with it would spend its capacity on answers nobody reads while every new
// request waits behind them.
func (d *Delivery) Expired() bool {
	if d.Meta.ReplyBy.IsZero() || !time.Now().After(d.Meta.ReplyBy) {
		return false
	}
	d.bus.metrics.expired.WithLabelValues(d.Geo, d.Stream).Inc()
	return true
}

// After makes the record's commit wait for sends its handler started and
// does not wait for itself: records of the side streams, which linger
// to travel in batches (DefaultSideLinger), so a handler that waited for
// them would hold a worker for the linger. Once the handler has returned
// nil, the consumer keeps the committed offset from passing the record
// until every send is acknowledged; a send that fails is produced again,
// with backoff, until it is written, the consumer stops or the partition
// leaves it (the record is then redelivered and handled again whole).
// A shutdown or a revocation waits for them as for running handlers.
//
// After returns the errors of the sends that failed before a record was
// built (an event that cannot be sealed, a resource that is gone): the
// handler returns them, as it would have from waiting. Outside a
// consumer's handler, After waits for the sends.
func (d *Delivery) After(sends ...*Sending) error {
	if !d.consumed {
		return WaitAll(sends...)
	}
	var errs []error
	for _, s := range sends {
		if s.rec == nil {
			errs = append(errs, s.Wait())
			continue
		}
		d.after = append(d.after, s)
	}
	return errors.Join(errs...)
}

func (b *Bus) delivery(r *kgo.Record) *Delivery {
	geo, stream, _ := SplitTopic(b.ns, r.Topic)
	return &Delivery{Geo: geo, Stream: stream, Meta: MetaOf(r), Record: r, bus: b}
}

// Payload returns the plaintext JSON payload, opening it with the data key
// named in its headers when the event type is sealed. A payload that
// cannot be opened (unknown type, missing or shredded key, tampering) is a
// permanent error; a key lookup the key table cannot answer now (the
// broker is away) is not.
func (d *Delivery) Payload(ctx context.Context) ([]byte, error) {
	spec, ok := events.LookupReceived(d.Meta.Type)
	if !ok {
		return nil, Permanent(fmt.Errorf("record %s/%d@%d: event type %s is neither registered nor the next version of one", d.Record.Topic, d.Record.Partition, d.Record.Offset, headerText(d.Meta.Type.String())))
	}
	if spec.Protection == events.Plain {
		return d.Record.Value, nil
	}
	if d.Meta.KeyID == "" {
		return nil, Permanent(fmt.Errorf("record %s/%d@%d: %s payload without a key ID", d.Record.Topic, d.Record.Partition, d.Record.Offset, d.Meta.Type))
	}
	if len(d.Meta.KeyID) > maxHeaderText {
		return nil, Permanent(fmt.Errorf("record %s/%d@%d: key ID %s is too long", d.Record.Topic, d.Record.Partition, d.Record.Offset, headerText(d.Meta.KeyID)))
	}
	k, err := d.bus.keys.ByID(ctx, d.Meta.KeyID)
	if err != nil {
		err = fmt.Errorf("record %s/%d@%d: %w", d.Record.Topic, d.Record.Partition, d.Record.Offset, err)
		if errors.Is(err, errKeysUnavailable) || ctx.Err() != nil {
			return nil, err // the key table could not answer now: retried
		}
		return nil, Permanent(err)
	}
	owner := d.Meta.Resource
	if spec.Protection == events.AbuseKey {
		owner = keys.AbuseResource
	}
	if k.Resource != owner || k.Geo != d.Geo || (spec.Protection == events.AbuseKey && k.Geo != d.Meta.HomeGeo) {
		return nil, Permanent(fmt.Errorf("record %s/%d@%d: data key %s does not belong to its resource and the topic's geography", d.Record.Topic, d.Record.Partition, d.Record.Offset, k.ID))
	}
	pt, err := k.Open(d.Record.Value, keys.AAD(d.Meta.RequestID, d.Meta.Resource, d.Meta.Type.String()))
	if err != nil {
		return nil, Permanent(err)
	}
	return pt, nil
}

// maxHeaderText is the most of a header an error quotes.
const maxHeaderText = 128

// headerText quotes a header value for an error: at most maxHeaderText
// bytes, escaped, so a malformed record cannot flood a log line or a
// dead-letter header.
func headerText(s string) string {
	if len(s) > maxHeaderText {
		return strconv.Quote(s[:maxHeaderText]) + "…"
	}
	return strconv.Quote(s)
}

// Decode opens the payload and unmarshals it into v.
func (d *Delivery) Decode(ctx context.Context, v any) error {
	pt, err := d.Payload(ctx)
	if err != nil {
		return err
	}
	if err := jsonv2.Unmarshal(pt, v, eventJSON); err != nil {
		return Permanent(fmt.Errorf("decoding %s from %s/%d@%d: %s", d.Meta.Type, d.Record.Topic, d.Record.Partition, d.Record.Offset, describeJSONError(err)))
	}
	return nil
}

// eventJSON is how events are encoded and decoded: the JSON of
// encoding/json (the schemas' wire format: nil slices as null, legacy
// omitempty, case-insensitive names, invalid UTF-8 passed through) by the
// engine of encoding/json/v2, which decodes in one pass with a fraction
// of the allocations; errors are v2's, which name offsets, not values.
var eventJSON = jsonv2.JoinOptions(jsonv1.DefaultOptionsV1(), jsonv1.ReportErrorsWithLegacySemantics(false))

// describeJSONError says where and why a payload failed to decode without
// quoting it: the decoder's own messages can carry bytes of the payload
// (a JSON pointer names the payload's keys), and this error travels into
// logs and dead-letter headers.
func describeJSONError(err error) string {
	var syn *jsontext.SyntacticError
	var sem *jsonv2.SemanticError
	switch {
	case errors.As(err, &syn):
		return "malformed JSON at byte " + strconv.FormatInt(syn.ByteOffset, 10)
	case errors.As(err, &sem):
		msg := "a JSON " + sem.JSONKind.String() + " at byte " + strconv.FormatInt(sem.ByteOffset, 10)
		if sem.GoType != nil {
			msg += " does not decode into " + sem.GoType.String()
		} else {
			msg += " does not decode into its event type"
		}
		return msg
	default:
		return "payload does not decode into its event type"
	}
}

// partitioner places records by the hash of their key (Kafka's murmur2, as
// the Java client does), except on reply topics, where the requester chose
// the partition it reads.
type partitioner struct{ ns string }

func (p partitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if _, stream, ok := SplitTopic(p.ns, topic); ok && stream == StreamReplies {
		return kgo.ManualPartitioner().ForTopic(topic)
	}
	return kgo.StickyKeyPartitioner(nil).ForTopic(topic)
}

// ReplyPartition is the partition of a replies topic with the given number
// of partitions that an instance reads: a hash of its instance ID.
func ReplyPartition(instance string, partitions int) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(instance))
	return int32(h.Sum32() % uint32(partitions))
}
