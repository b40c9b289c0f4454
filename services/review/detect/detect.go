// Package detect finds recurring abuse in a geography's safety signals
// with configurable rules, and keeps the cases they open in that
// geography's Redis. Only the request IDs of a case are flagged.
//
// # Rules and hits
//
// A signal is a hit of a rule when it matches the rule's kind (a category
// at MinSeverity or above; a detected jailbreak; blocked content; a
// blocked completion). Hits are grouped by resource, and for
// KindRecurring also by the content's keyed hash. A rule fires when
// Threshold hits of one group lie within Window of each other: the
// earliest and latest of them are less than Window apart, judged by the
// signals' own time (At), so a replay of old signals is judged as it
// happened. Each signal (request ID and direction) counts once per rule,
// however often it is delivered. A request's one signal that covers its
// prompt and its completion (safety.signal.v2) counts as the two signals
// of one direction each it replaces, each at its own time.
//
// # Cases
//
// A rule that fires for a resource opens a case holding the request IDs
// of the hits that made it fire, and flags those request IDs. While the
// case is open, every further hit of that rule and resource joins it
// (for KindRecurring: every further hit of content that made the rule
// fire; other content joins once it fires too) instead of opening
// another. Hits taken into a case are used up: after the case is decided,
// a new case needs Threshold new hits.
//
// Flags expire 30 days after the flagged signal (FlagTTL), with the
// abuse-monitoring records they point to. A case is kept for
// CaseRetention (default 30 days) after its last change: while open,
// after the last hit that joined it; once decided, after the decision.
// By then every record it names has left the abuse log; the decision
// itself stays in the geography's audit chain.
//
// # Redis keys
//
// All keys of a geography are prefixed terroir:<geo>:review: in that
// geography's Redis; <group> is "-" or, for KindRecurring, the content
// hash; a signal is "<direction>|<request ID>":
//
//	seen:<rule>:<group>:<resource>   zset signal → At (ms): signals already counted (deduplication), 30 days
//	live:<rule>:<group>:<resource>   zset signal → At (ms): hits not yet in a case
//	open:<rule>:<resource>           ID of the open case of the rule and resource
//	case:<id>                        hash: the case's fields
//	case:<id>:requests               zset request ID → At (ms) of its first hit
//	case:<id>:groups                 set of the groups that fired into the case
//	cases:open                       zset case ID → opened at (ms)
//	cases:decided                    zset case ID → decided at (ms)
//	cases:pending                    set of opened cases whose OnOpen has not returned
//	flag:<request ID>                ID of the case that flagged the request, a space and its signature (package signing)
//
// One Lua script counts a signal for a rule and opens or extends a case,
// so concurrent and repeated deliveries cannot double-count or open two
// cases; another decides a case. The scripts build keys from the prefix,
// so each geography's Redis is a single (non-cluster) server.
package detect

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/review/signing"
)

// Rule kinds.
const (
	// KindSeverity: Threshold signals of one resource with a category at
	// MinSeverity or above within Window.
	KindSeverity = "severity"
	// KindJailbreak: Threshold detected jailbreak attempts within Window.
	KindJailbreak = "jailbreak"
	// KindRecurring: the same blocked content (its keyed hash) Threshold
	// times within Window.
	KindRecurring = "recurring_content"
	// KindFilteredOutput: Threshold filtered outputs within Window.
	KindFilteredOutput = "filtered_output_burst"
)

// Rule is one detection rule.
type Rule struct {
	// Name identifies the rule in cases and keys: letters, digits, "_",
	// "-" and ".", at most 64.
	Name string `yaml:"name"`
	Kind string `yaml:"kind"`
	// Threshold is the number of hits that fires the rule, 1 to
	// MaxThreshold.
	Threshold int `yaml:"threshold"`
	// Window is the span the hits must fall in (YAML: a Go duration such
	// as "10m"), up to MaxWindow.
	Window      time.Duration `yaml:"window"`
	MinSeverity string        `yaml:"minSeverity,omitempty"` // low|medium|high, for KindSeverity
}

// Bounds of a rule.
const (
	// MaxWindow is the longest window: hits older than the abuse-log
	// retention point at records that are gone.
	MaxWindow = FlagTTL
	// MaxThreshold bounds Threshold; it is also how many uncounted hits
	// and counted signals are kept per rule and group.
	MaxThreshold = 10000
)

// Case statuses and decisions.
const (
	StatusOpen    = "open"
	StatusDecided = "decided"

	DecisionNoAction = "no_action"
	DecisionWarn     = "warn"
	DecisionThrottle = "throttle"
	DecisionSuspend  = "suspend"
)

// Retention.
const (
	// FlagTTL is how long a request stays flagged after its signal: as
	// long as its abuse-monitoring record is kept (promise 6).
	FlagTTL = 30 * 24 * time.Hour
	// DefaultCaseRetention is how long a case is kept after its last
	// change.
	DefaultCaseRetention = 30 * 24 * time.Hour
	// DefaultCaseLimit is the number of cases Cases returns when its
	// limit is not positive.
	DefaultCaseLimit = 100
)

var (
	// ErrNoCase: no such case in that geography.
	ErrNoCase = errors.New("no such case")
	// ErrDecided: the case has already been decided.
	ErrDecided = errors.New("case already decided")
	// ErrBadDecision: the decision is not one of the Decision constants,
	// or nobody is named as deciding.
	ErrBadDecision = errors.New("invalid decision")
)

// Case is what a rule that fired opened.
type Case struct {
	ID       string `json:"id"`
	Geo      string `json:"geo"`
	Resource string `json:"resource"`
	Rule     string `json:"rule"`
	// RequestIDs are the flagged requests, in the order of their signals.
	RequestIDs []string `json:"request_ids"`
	// Hits is the number of hits taken into the case (a request may
	// give two: its prompt and its completion).
	Hits      int       `json:"hits"`
	OpenedAt  time.Time `json:"opened_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Status    string    `json:"status"`
	Decision  string    `json:"decision,omitempty"`
	DecidedBy string    `json:"decided_by,omitempty"`
	DecidedAt time.Time `json:"decided_at,omitzero"`
}

// Config configures a detector.
type Config struct {
	Bus   *bus.Bus
	Redis map[string]*redis.Client // per geography
	// Geos are the geographies whose signals are consumed; default every
	// geography of Bus.
	Geos []string
	// Rules default to DefaultRules.
	Rules []Rule
	// Now is the clock; default time.Now.
	Now func() time.Time
	// OnOpen, when set, is called once for each case opened.
	OnOpen func(ctx context.Context, c Case)
	Log    *zap.Logger
	// CaseRetention is how long a case is kept after its last change;
	// default DefaultCaseRetention.
	CaseRetention time.Duration
}

// Detector consumes safety signals and keeps cases.
type Detector struct {
	cfg    Config
	signer *signing.Signer
	// handled, when set, is called after each signal has been judged.
	handled func(geo string, sig events.SafetySignal)
}

// DefaultRules are the rules used when none are configured: 5 signals
// with a category at medium or above in 10 minutes, 3 jailbreak attempts
// in 10 minutes, the same blocked content 3 times in an hour, 5 blocked
// outputs in 10 minutes, each of one resource.
func DefaultRules() []Rule {
	return []Rule{
		{Name: "severe_content", Kind: KindSeverity, Threshold: 5, Window: 10 * time.Minute, MinSeverity: string(events.SeverityMedium)},
		{Name: "jailbreak_attempts", Kind: KindJailbreak, Threshold: 3, Window: 10 * time.Minute},
		{Name: "recurring_blocked_content", Kind: KindRecurring, Threshold: 3, Window: time.Hour},
		{Name: "filtered_output_burst", Kind: KindFilteredOutput, Threshold: 5, Window: 10 * time.Minute},
	}
}

// LoadRules reads rules from a YAML file: a list of rules, e.g.
//
//	# rules.yaml
//	- name: severe_content
//	  kind: severity
//	  threshold: 5
//	  window: 10m
//	  minSeverity: medium
//
// Unknown fields, an empty list and invalid rules are errors.
func LoadRules(path string) ([]Rule, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading detection rules: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	var rules []Rule
	if err := dec.Decode(&rules); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("detection rules %s: no rules in the file", path)
		}
		return nil, fmt.Errorf("detection rules %s: %w", path, err)
	}
	if err := ValidateRules(rules); err != nil {
		return nil, fmt.Errorf("detection rules %s: %w", path, err)
	}
	return rules, nil
}

var (
	namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	geoPattern  = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	hashPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

var severityRank = map[events.Severity]int{
	events.SeveritySafe: 0, events.SeverityLow: 1, events.SeverityMedium: 2, events.SeverityHigh: 3,
}

// ValidateRules reports every problem of rules at once, each naming its
// rule.
func ValidateRules(rules []Rule) error {
	if len(rules) == 0 {
		return errors.New("no rules")
	}
	var errs []error
	seen := map[string]bool{}
	for i, r := range rules {
		name := fmt.Sprintf("rule %d (%q)", i+1, r.Name)
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
		}
		switch {
		case r.Name == "":
			bad("name is required")
		case !namePattern.MatchString(r.Name):
			bad("name must be 1 to 64 letters, digits, '_', '-' or '.'")
		case seen[r.Name]:
			bad("name is used by an earlier rule")
		}
		seen[r.Name] = true
		switch r.Kind {
		case KindSeverity, KindJailbreak, KindRecurring, KindFilteredOutput:
		default:
			bad("unknown kind %q (want %s, %s, %s or %s)", r.Kind, KindSeverity, KindJailbreak, KindRecurring, KindFilteredOutput)
		}
		if r.Threshold < 1 || r.Threshold > MaxThreshold {
			bad("threshold %d is not between 1 and %d", r.Threshold, MaxThreshold)
		}
		if r.Window <= 0 || r.Window > MaxWindow {
			bad("window %s is not above 0 and at most %s", r.Window, MaxWindow)
		} else if r.Window%time.Millisecond != 0 {
			bad("window %s is finer than a millisecond", r.Window)
		}
		switch {
		case r.Kind == KindSeverity && r.MinSeverity == "":
			bad("minSeverity is required (low, medium or high)")
		case r.Kind == KindSeverity && severityRank[events.Severity(r.MinSeverity)] == 0:
			bad("minSeverity %q is not low, medium or high", r.MinSeverity)
		case r.Kind != KindSeverity && r.MinSeverity != "":
			bad("minSeverity applies only to rules of kind %s", KindSeverity)
		}
	}
	return errors.Join(errs...)
}

// New checks cfg.
func New(cfg Config) (*Detector, error) {
	if cfg.Bus == nil {
		return nil, errors.New("detect: a bus is required")
	}
	if len(cfg.Geos) == 0 {
		cfg.Geos = cfg.Bus.Geos()
	}
	var errs []error
	for _, g := range cfg.Geos {
		if !geoPattern.MatchString(g) {
			errs = append(errs, fmt.Errorf("detect: geography %q is not a valid name", g))
			continue
		}
		if cfg.Redis[g] == nil {
			errs = append(errs, fmt.Errorf("detect: no Redis for geography %s", g))
		}
	}
	if cfg.Rules == nil {
		cfg.Rules = DefaultRules()
	}
	if err := ValidateRules(cfg.Rules); err != nil {
		errs = append(errs, fmt.Errorf("detect: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.CaseRetention <= 0 {
		cfg.CaseRetention = DefaultCaseRetention
	}
	cfg.Log = cfg.Log.Named("detect")
	cfg.Geos = slices.Clone(cfg.Geos)
	cfg.Rules = slices.Clone(cfg.Rules)
	signer, err := signing.New(cfg.Bus.Keys())
	if err != nil {
		return nil, err
	}
	return &Detector{cfg: cfg, signer: signer}, nil
}

// Run consumes the safety signals of cfg.Geos until ctx ends.
func (d *Detector) Run(ctx context.Context) error {
	c, err := d.cfg.Bus.NewConsumer(bus.ConsumerConfig{
		Group:   "review-detect",
		Streams: []string{bus.StreamSafetySignals},
		Geos:    d.cfg.Geos,
		Handler: d.handle,
	})
	if err != nil {
		return fmt.Errorf("detect: %w", err)
	}
	return c.Run(ctx)
}

func (d *Detector) handle(ctx context.Context, dl *bus.Delivery) error {
	var sig events.SafetySignal
	if err := dl.Decode(ctx, &sig); err != nil {
		return err
	}
	if reason := checkSignal(sig); reason != "" {
		return bus.Permanent(fmt.Errorf("safety signal %s/%d@%d: %s", dl.Record.Topic, dl.Record.Partition, dl.Record.Offset, reason))
	}
	// A request's one signal may cover its prompt and its completion: each
	// is counted as the signal of its direction alone, as when they came
	// apart, and a redelivery counts neither again.
	for _, one := range sig.Directions() {
		if err := d.judge(ctx, dl.Geo, one); err != nil {
			return err
		}
	}
	if d.handled != nil {
		d.handled(dl.Geo, sig)
	}
	return nil
}

// checkSignal says what makes sig unusable, naming fields only.
func checkSignal(sig events.SafetySignal) string {
	switch {
	case sig.RequestID == "":
		return "no request ID"
	case sig.Resource == "":
		return "no resource"
	case sig.Direction != events.DirectionPrompt && sig.Direction != events.DirectionCompletion:
		return "unknown direction"
	case sig.At.IsZero():
		return "no time"
	case sig.Prompt != nil && sig.Direction != events.DirectionCompletion:
		return "prompt findings on a prompt signal"
	case sig.Prompt != nil && sig.Prompt.At.IsZero():
		return "no time for the prompt"
	}
	return ""
}

// group returns the hit group of sig under r, or false when sig is no hit
// of r.
func group(r Rule, sig events.SafetySignal) (string, bool) {
	switch r.Kind {
	case KindSeverity:
		floor := severityRank[events.Severity(r.MinSeverity)]
		c := sig.Categories
		for _, s := range []events.Severity{c.Hate.Severity, c.Sexual.Severity, c.Violence.Severity, c.SelfHarm.Severity} {
			if severityRank[s] >= floor {
				return "-", true
			}
		}
	case KindJailbreak:
		if j := sig.Detections.Jailbreak; j != nil && j.Detected {
			return "-", true
		}
	case KindRecurring:
		if sig.Filtered && hashPattern.MatchString(sig.ContentHash) {
			return sig.ContentHash, true
		}
	case KindFilteredOutput:
		if sig.Filtered && sig.Direction == events.DirectionCompletion {
			return "-", true
		}
	}
	return "", false
}

func prefix(geo string) string { return "terroir:" + geo + ":review:" }

// hitScript counts one signal for one rule and opens or extends a case.
//
// KEYS: 1 seen, 2 live, 3 open pointer.
// ARGV: 1 prefix, 2 signal, 3 request ID, 4 At (ms), 5 window (ms),
// 6 threshold, 7 ID for a new case, 8 now (ms), 9 flag TTL (ms),
// 10 case retention (ms), 11 group, 12 geo, 13 resource, 14 rule,
// 15 cap of the zsets, 16 TTL of the live zset (ms).
//
// Returns {outcome, case ID, flagged request IDs...}: outcome is
// "duplicate", "counted", "joined" or "opened"; the request IDs are those
// this call flagged, whose flags the caller signs (Lua cannot, and the
// key must not reach Redis). A repeated signal that opened a case whose OnOpen
// has not returned reports "opened" again, so the notice is not lost.
var hitScript = redis.NewScript(`
local prefix, member, req = ARGV[1], ARGV[2], ARGV[3]
local at, window, threshold = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local newID, now = ARGV[7], tonumber(ARGV[8])
local flagTTL, caseTTL = tonumber(ARGV[9]), tonumber(ARGV[10])
local group, geo, resource, rule = ARGV[11], ARGV[12], ARGV[13], ARGV[14]
local cap, liveTTL = tonumber(ARGV[15]), tonumber(ARGV[16])
local function int(x) return string.format('%.0f', x) end
local function caseKey(id) return prefix .. 'case:' .. id end

local open = redis.call('GET', KEYS[3])
if open and redis.call('EXISTS', caseKey(open)) == 0 then
  redis.call('DEL', KEYS[3])
  open = false
end

if redis.call('ZADD', KEYS[1], 'NX', int(at), member) == 0 then
  if open and redis.call('HGET', caseKey(open), 'opener') == member
     and redis.call('SISMEMBER', prefix .. 'cases:pending', open) == 1 then
    return {'opened', open}
  end
  return {'duplicate', ''}
end
local newest = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. int(newest - flagTTL))
local n = redis.call('ZCARD', KEYS[1])
if n > cap then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1) end
redis.call('PEXPIRE', KEYS[1], int(flagTTL))

-- The requests this call flags, for the caller to sign.
local flagged = {}
local function addToCase(id, reqs, scores)
  local ck = caseKey(id)
  for k = 1, #reqs do
    redis.call('ZADD', ck .. ':requests', 'LT', int(scores[k]), reqs[k])
    local ttl = scores[k] + flagTTL - now
    if ttl > 0 and redis.call('SET', prefix .. 'flag:' .. reqs[k], id, 'NX', 'PX', int(ttl)) then
      flagged[#flagged + 1] = reqs[k]
    end
  end
  redis.call('HINCRBY', ck, 'hits', #reqs)
  redis.call('HSET', ck, 'updated_at', int(now))
  for _, k in ipairs({ck, ck .. ':requests', ck .. ':groups', KEYS[3]}) do
    redis.call('PEXPIRE', k, int(caseTTL))
  end
end

if open and redis.call('SISMEMBER', caseKey(open) .. ':groups', group) == 1 then
  addToCase(open, {req}, {at})
  return {'joined', open, unpack(flagged)}
end

redis.call('ZADD', KEYS[2], int(at), member)
local r = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. int(at - window), '(' .. int(at + window), 'WITHSCORES')
local ms, ss = {}, {}
for k = 1, #r, 2 do
  ms[#ms + 1] = r[k]
  ss[#ss + 1] = tonumber(r[k + 1])
end
-- The largest run of hits less than a window apart that holds this one.
local best, bi, bj, i = 0, 0, 0, 1
for j = 1, #ss do
  while ss[j] - ss[i] >= window do i = i + 1 end
  if ss[i] <= at and at <= ss[j] and j - i + 1 > best then
    best, bi, bj = j - i + 1, i, j
  end
end

local fired = best >= threshold
local reqs, scores = {}, {}
if fired then
  for k = bi, bj do
    redis.call('ZREM', KEYS[2], ms[k])
    local sep = string.find(ms[k], '|', 1, true)
    reqs[#reqs + 1] = string.sub(ms[k], sep + 1)
    scores[#scores + 1] = ss[k]
  end
end
local lnewest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')[2]
if lnewest then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. int(tonumber(lnewest) - window))
  n = redis.call('ZCARD', KEYS[2])
  if n > cap then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - cap - 1) end
  redis.call('PEXPIRE', KEYS[2], int(liveTTL))
end
if not fired then
  return {'counted', ''}
end

if open then
  redis.call('SADD', caseKey(open) .. ':groups', group)
  addToCase(open, reqs, scores)
  return {'joined', open, unpack(flagged)}
end
local ck = caseKey(newID)
redis.call('HSET', ck, 'id', newID, 'geo', geo, 'resource', resource, 'rule', rule, 'status', 'open',
  'opened_at', int(now), 'updated_at', int(now), 'opener', member, 'hits', 0)
redis.call('SADD', ck .. ':groups', group)
redis.call('SET', KEYS[3], newID)
addToCase(newID, reqs, scores)
redis.call('ZADD', prefix .. 'cases:open', int(now), newID)
redis.call('SADD', prefix .. 'cases:pending', newID)
return {'opened', newID, unpack(flagged)}
`)

// judge counts sig for every rule it is a hit of.
func (d *Detector) judge(ctx context.Context, geo string, sig events.SafetySignal) error {
	rdb := d.cfg.Redis[geo]
	p := prefix(geo)
	member := string(sig.Direction) + "|" + sig.RequestID
	for _, r := range d.cfg.Rules {
		g, ok := group(r, sig)
		if !ok {
			continue
		}
		now := d.cfg.Now()
		keys := []string{
			p + "seen:" + r.Name + ":" + g + ":" + sig.Resource,
			p + "live:" + r.Name + ":" + g + ":" + sig.Resource,
			p + "open:" + r.Name + ":" + sig.Resource,
		}
		res, err := hitScript.Run(ctx, rdb, keys,
			p, member, sig.RequestID, sig.At.UnixMilli(), r.Window.Milliseconds(), r.Threshold,
			newCaseID(now), now.UnixMilli(), FlagTTL.Milliseconds(), d.cfg.CaseRetention.Milliseconds(),
			g, geo, sig.Resource, r.Name, MaxThreshold, (r.Window + 24*time.Hour).Milliseconds(),
		).StringSlice()
		if err != nil {
			return fmt.Errorf("detect: judging request %s for rule %s in %s: %w", sig.RequestID, r.Name, geo, err)
		}
		if len(res) < 2 {
			return fmt.Errorf("detect: judging request %s for rule %s in %s: unexpected script result", sig.RequestID, r.Name, geo)
		}
		if err := d.signFlags(ctx, rdb, geo, res[1], res[2:]); err != nil {
			return err
		}
		switch res[0] {
		case "opened":
			if err := d.opened(ctx, geo, res[1]); err != nil {
				return err
			}
		case "joined":
			d.cfg.Log.Debug("request joined a case", zap.String("geo", geo), zap.String("case_id", res[1]),
				zap.String("request_id", sig.RequestID), zap.String("rule", r.Name))
		}
	}
	return nil
}

// opened reports a newly opened case to OnOpen, then clears its pending
// mark.
func (d *Detector) opened(ctx context.Context, geo, id string) error {
	c, err := d.Case(ctx, geo, id)
	if err != nil {
		return err
	}
	d.cfg.Log.Info("case opened", zap.String("geo", geo), zap.String("case_id", c.ID), zap.String("resource", c.Resource),
		zap.String("rule", c.Rule), zap.Int("requests", len(c.RequestIDs)), zap.Int("hits", c.Hits))
	if d.cfg.OnOpen != nil {
		d.cfg.OnOpen(ctx, c)
	}
	if err := d.cfg.Redis[geo].SRem(ctx, prefix(geo)+"cases:pending", id).Err(); err != nil {
		return fmt.Errorf("detect: clearing the notice of case %s in %s: %w", id, geo, err)
	}
	return nil
}

var crockford = base32.NewEncoding("0123456789ABCDEFGHJKMNPQRSTVWXYZ").WithPadding(base32.NoPadding)

// newCaseID returns "case_" and 26 characters: the time in milliseconds
// and 80 random bits, so IDs sort by time.
func newCaseID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	_, _ = rand.Read(b[6:])
	return "case_" + crockford.EncodeToString(b[:])
}

func (d *Detector) redis(geo string) (*redis.Client, error) {
	if !slices.Contains(d.cfg.Geos, geo) {
		return nil, fmt.Errorf("detect: geography %q is not served here", geo)
	}
	return d.cfg.Redis[geo], nil
}

// Cases returns geo's cases, open ones first, newest first, at most limit
// (DefaultCaseLimit when limit is not positive). Open cases are ordered
// by when they were opened, decided ones by when they were decided.
func (d *Detector) Cases(ctx context.Context, geo string, limit int) ([]Case, error) {
	rdb, err := d.redis(geo)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = DefaultCaseLimit
	}
	p := prefix(geo)
	var out []Case
	have := map[string]bool{}
	for _, index := range []string{p + "cases:open", p + "cases:decided"} {
		var gone []any
		for start := int64(0); len(out) < limit; {
			ids, err := rdb.ZRevRange(ctx, index, start, start+int64(limit)-1).Result()
			if err != nil {
				return nil, fmt.Errorf("detect: listing cases of %s: %w", geo, err)
			}
			if len(ids) == 0 {
				break
			}
			start += int64(len(ids))
			cases, err := d.load(ctx, rdb, geo, ids)
			if err != nil {
				return nil, err
			}
			for i, c := range cases {
				switch {
				case c == nil:
					gone = append(gone, ids[i]) // expired
				case have[c.ID] || len(out) >= limit:
				default:
					have[c.ID] = true
					out = append(out, *c)
				}
			}
		}
		if len(gone) > 0 {
			if err := rdb.ZRem(ctx, index, gone...).Err(); err != nil {
				d.cfg.Log.Warn("removing expired cases from the index failed", zap.String("geo", geo), zap.Error(err))
			}
		}
	}
	// A case decided while it was being listed may show under both.
	slices.SortStableFunc(out, func(a, b Case) int {
		return boolRank(a.Status != StatusOpen) - boolRank(b.Status != StatusOpen)
	})
	return out, nil
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// load reads cases by ID; a case that does not exist is nil.
func (d *Detector) load(ctx context.Context, rdb *redis.Client, geo string, ids []string) ([]*Case, error) {
	p := prefix(geo)
	pipe := rdb.Pipeline()
	fields := make([]*redis.MapStringStringCmd, len(ids))
	reqs := make([]*redis.StringSliceCmd, len(ids))
	for i, id := range ids {
		fields[i] = pipe.HGetAll(ctx, p+"case:"+id)
		reqs[i] = pipe.ZRange(ctx, p+"case:"+id+":requests", 0, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("detect: reading cases of %s: %w", geo, err)
	}
	out := make([]*Case, len(ids))
	for i := range ids {
		m := fields[i].Val()
		if len(m) == 0 {
			continue
		}
		c := caseOf(m)
		c.RequestIDs = reqs[i].Val()
		out[i] = &c
	}
	return out, nil
}

func caseOf(m map[string]string) Case {
	ms := func(k string) time.Time {
		v, err := strconv.ParseInt(m[k], 10, 64)
		if err != nil || v == 0 {
			return time.Time{}
		}
		return time.UnixMilli(v).UTC()
	}
	hits, _ := strconv.Atoi(m["hits"])
	return Case{
		ID: m["id"], Geo: m["geo"], Resource: m["resource"], Rule: m["rule"], Hits: hits,
		OpenedAt: ms("opened_at"), UpdatedAt: ms("updated_at"), Status: m["status"],
		Decision: m["decision"], DecidedBy: m["decided_by"], DecidedAt: ms("decided_at"),
	}
}

// Case returns one case of geo, or ErrNoCase.
func (d *Detector) Case(ctx context.Context, geo, id string) (Case, error) {
	rdb, err := d.redis(geo)
	if err != nil {
		return Case{}, err
	}
	cs, err := d.load(ctx, rdb, geo, []string{id})
	if err != nil {
		return Case{}, err
	}
	if cs[0] == nil {
		return Case{}, fmt.Errorf("case %s in %s: %w", id, geo, ErrNoCase)
	}
	return *cs[0], nil
}

// signFlags replaces the bare case ID the hit script wrote into each
// new flag with "<case ID> <signature>", keeping the flag's expiry. A
// flag left unsigned (the process stopped in between) flags nothing:
// access fails closed.
func (d *Detector) signFlags(ctx context.Context, rdb *redis.Client, geo, caseID string, requestIDs []string) error {
	if len(requestIDs) == 0 {
		return nil
	}
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range requestIDs {
			sig, err := d.signer.Sign(ctx, signing.KindFlag, geo, id, caseID)
			if err != nil {
				return err
			}
			p.SetArgs(ctx, prefix(geo)+"flag:"+id, caseID+" "+sig, redis.SetArgs{Mode: "XX", KeepTTL: true})
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("detect: signing the flags of case %s in %s: %w", caseID, geo, err)
	}
	return nil
}

// Flagged reports the case that flagged requestID in geo, if any: the
// first case that took the request in, for FlagTTL after its signal. A
// flag without a valid signature (written by anyone but detection) is
// ignored, and logged without its value.
func (d *Detector) Flagged(ctx context.Context, geo, requestID string) (caseID string, ok bool, err error) {
	rdb, err := d.redis(geo)
	if err != nil {
		return "", false, err
	}
	v, err := rdb.Get(ctx, prefix(geo)+"flag:"+requestID).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("detect: reading the flag of request %s in %s: %w", requestID, geo, err)
	}
	id, sig, _ := strings.Cut(v, " ")
	switch err := d.signer.Verify(ctx, sig, signing.KindFlag, geo, requestID, id); {
	case errors.Is(err, signing.ErrInvalid):
		d.cfg.Log.Warn("flag without a valid signature: ignored", zap.String("geo", geo), zap.String("request_id", requestID))
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("detect: %w", err)
	}
	return id, true, nil
}

// decideScript decides an open case.
//
// KEYS: 1 the case. ARGV: 1 prefix, 2 case ID, 3 decision, 4 by, 5 now
// (ms), 6 case retention (ms).
var decideScript = redis.NewScript(`
local prefix, id = ARGV[1], ARGV[2]
local now, retention = tonumber(ARGV[5]), ARGV[6]
if redis.call('EXISTS', KEYS[1]) == 0 then return 'none' end
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return 'decided' end
redis.call('HSET', KEYS[1], 'status', 'decided', 'decision', ARGV[3], 'decided_by', ARGV[4],
  'decided_at', ARGV[5], 'updated_at', ARGV[5])
local f = redis.call('HMGET', KEYS[1], 'rule', 'resource')
local ptr = prefix .. 'open:' .. f[1] .. ':' .. f[2]
if redis.call('GET', ptr) == id then redis.call('DEL', ptr) end
redis.call('ZREM', prefix .. 'cases:open', id)
redis.call('SREM', prefix .. 'cases:pending', id)
redis.call('ZADD', prefix .. 'cases:decided', ARGV[5], id)
redis.call('ZREMRANGEBYSCORE', prefix .. 'cases:decided', '-inf', '(' .. string.format('%.0f', now - tonumber(retention)))
for _, k in ipairs({KEYS[1], KEYS[1] .. ':requests', KEYS[1] .. ':groups'}) do
  redis.call('PEXPIRE', k, retention)
end
return 'ok'
`)

// Decide records a decision on an open case of geo: ErrNoCase when there
// is no such case, ErrDecided when it was decided already, ErrBadDecision
// for an unknown decision or an empty by.
func (d *Detector) Decide(ctx context.Context, geo, id, decision, by string) (Case, error) {
	rdb, err := d.redis(geo)
	if err != nil {
		return Case{}, err
	}
	switch decision {
	case DecisionNoAction, DecisionWarn, DecisionThrottle, DecisionSuspend:
	default:
		return Case{}, fmt.Errorf("deciding case %s in %s: %w: %q is not %s, %s, %s or %s", id, geo, ErrBadDecision,
			decision, DecisionNoAction, DecisionWarn, DecisionThrottle, DecisionSuspend)
	}
	if strings.TrimSpace(by) == "" {
		return Case{}, fmt.Errorf("deciding case %s in %s: %w: nobody named as deciding", id, geo, ErrBadDecision)
	}
	p := prefix(geo)
	res, err := decideScript.Run(ctx, rdb, []string{p + "case:" + id},
		p, id, decision, by, d.cfg.Now().UnixMilli(), d.cfg.CaseRetention.Milliseconds()).Text()
	if err != nil {
		return Case{}, fmt.Errorf("deciding case %s in %s: %w", id, geo, err)
	}
	switch res {
	case "none":
		return Case{}, fmt.Errorf("deciding case %s in %s: %w", id, geo, ErrNoCase)
	case "decided":
		return Case{}, fmt.Errorf("deciding case %s in %s: %w", id, geo, ErrDecided)
	}
	d.cfg.Log.Info("case decided", zap.String("geo", geo), zap.String("case_id", id), zap.String("decision", decision))
	return d.Case(ctx, geo, id)
}
