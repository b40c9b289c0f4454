package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/keys"
)

// store keeps the progress of the batches of one geography in its Redis,
// under "terroir:<geo>:batch:": a hash per job (its object, sealed, and
// its counters), the set of jobs not yet ended, a lease per job naming
// the instance that drives it, and a hash per job of finished lines
// (line index → the line's answer, sealed). Only the batch service reads
// these keys.
type store struct {
	geo  string
	rdb  *redis.Client
	keys *keys.Manager
}

func (s *store) prefix() string            { return "terroir:" + s.geo + ":batch:" }
func (s *store) jobKey(id string) string   { return s.prefix() + "job:" + id }
func (s *store) resKey(id string) string   { return s.prefix() + "res:" + id }
func (s *store) leaseKey(id string) string { return s.prefix() + "lease:" + id }
func (s *store) activeKey() string         { return s.prefix() + "active" }
func (s *store) endedKey(id string) string { return s.prefix() + "ended:" + id }

// endedTTL is how long an ended job is remembered, so that its create
// command, read again (a consumer that died before committing), does not
// run it a second time: longer than the batch-jobs stream keeps commands.
const endedTTL = 8 * 24 * time.Hour

// Fields of a job's hash.
const (
	fObject    = "object"    // the sealed batch object
	fResource  = "resource"  // its resource, to find the key
	fCancel    = "cancel"    // "1" once cancelling was asked
	fClosed    = "closed"    // "1" once the output is being written: late answers are dropped
	fCompleted = "completed" // lines answered 2xx
	fFailed    = "failed"    // lines answered otherwise
	fInTokens  = "in_tokens"
	fOutTokens = "out_tokens"
)

// sealValue seals plain under the resource's current data key and
// prefixes the key's ID, so the value opens after rotations.
func (s *store) sealValue(ctx context.Context, resource, what string, plain []byte) ([]byte, error) {
	k, err := s.keys.ForResource(ctx, s.geo, resource)
	if err != nil {
		return nil, err
	}
	sealed := k.Seal(plain, keys.AAD(what, resource, "batch.state"))
	out := make([]byte, 0, len(k.ID)+1+len(sealed))
	out = append(out, k.ID...)
	out = append(out, 0)
	return append(out, sealed...), nil
}

func (s *store) openValue(ctx context.Context, resource, what string, v []byte) ([]byte, error) {
	id, sealed, ok := bytes.Cut(v, []byte{0})
	if !ok {
		return nil, errors.New("malformed sealed value")
	}
	k, err := s.keys.ByID(ctx, string(id))
	if err != nil {
		return nil, err
	}
	return k.Open(sealed, keys.AAD(what, resource, "batch.state"))
}

// register stores a new job and marks it active; it is idempotent (a
// redelivered create keeps the progress already made).
func (s *store) register(ctx context.Context, b events.BatchObject) (bool, error) {
	if n, err := s.rdb.Exists(ctx, s.endedKey(b.ID)).Result(); err != nil || n > 0 {
		return false, err
	}
	sealed, err := s.sealObject(ctx, b)
	if err != nil {
		return false, err
	}
	created, err := s.rdb.HSetNX(ctx, s.jobKey(b.ID), fObject, sealed).Result()
	if err != nil {
		return false, err
	}
	if err := s.rdb.HSet(ctx, s.jobKey(b.ID), fResource, b.Resource).Err(); err != nil {
		return false, err
	}
	if created {
		if err := s.rdb.SAdd(ctx, s.activeKey(), b.ID).Err(); err != nil {
			return false, err
		}
	}
	return created, nil
}

func (s *store) sealObject(ctx context.Context, b events.BatchObject) ([]byte, error) {
	plain, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	return s.sealValue(ctx, b.Resource, b.ID, plain)
}

// saveObject replaces the job's object.
func (s *store) saveObject(ctx context.Context, b events.BatchObject) error {
	sealed, err := s.sealObject(ctx, b)
	if err != nil {
		return err
	}
	return s.rdb.HSet(ctx, s.jobKey(b.ID), fObject, sealed).Err()
}

// state is a job's hash, opened.
type state struct {
	obj                 events.BatchObject
	cancel, closed      bool
	completed, failed   int
	inTokens, outTokens int64
}

// errNoJob means the job's hash is gone (ended and cleaned up).
var errNoJob = errors.New("no such batch job")

func (s *store) load(ctx context.Context, id string) (state, error) {
	m, err := s.rdb.HGetAll(ctx, s.jobKey(id)).Result()
	if err != nil {
		return state{}, err
	}
	if m[fObject] == "" {
		return state{}, errNoJob
	}
	plain, err := s.openValue(ctx, m[fResource], id, []byte(m[fObject]))
	if err != nil {
		return state{}, err
	}
	var st state
	if err := json.Unmarshal(plain, &st.obj); err != nil {
		return state{}, fmt.Errorf("decoding batch %s: %w", id, err)
	}
	st.cancel, st.closed = m[fCancel] == "1", m[fClosed] == "1"
	st.completed, _ = strconv.Atoi(m[fCompleted])
	st.failed, _ = strconv.Atoi(m[fFailed])
	st.inTokens, _ = strconv.ParseInt(m[fInTokens], 10, 64)
	st.outTokens, _ = strconv.ParseInt(m[fOutTokens], 10, 64)
	return st, nil
}

// requestCancel marks a job for cancelling; false when it is unknown.
func (s *store) requestCancel(ctx context.Context, id string) (bool, error) {
	n, err := s.rdb.Exists(ctx, s.jobKey(id)).Result()
	if err != nil || n == 0 {
		return false, err
	}
	return true, s.rdb.HSet(ctx, s.jobKey(id), fCancel, "1").Err()
}

// close stops the job's counters: answers arriving later are dropped.
func (s *store) close(ctx context.Context, id string) error {
	return s.rdb.HSet(ctx, s.jobKey(id), fClosed, "1").Err()
}

// recordScript stores a line's answer once: a second answer for the same
// line (a redelivery, or a line sent again) changes nothing, and neither
// does one for a job that ended.
var recordScript = redis.NewScript(`
local job = KEYS[1]
if redis.call('EXISTS', job) == 0 or redis.call('HGET', job, 'closed') == '1' then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', job, ARGV[3], 1)
redis.call('HINCRBY', job, 'in_tokens', ARGV[4])
redis.call('HINCRBY', job, 'out_tokens', ARGV[5])
return 1
`)

// answer is a line's answer as kept until the output is written.
type answer struct {
	RequestID  string          `json:"request_id"`
	StatusCode int             `json:"status_code"`
	Body       json.RawMessage `json:"body"`
}

// record stores the answer of line index of job id; it reports whether
// the answer was new.
func (s *store) record(ctx context.Context, resource, id string, index int, a answer, in, out int64) (bool, error) {
	plain, err := json.Marshal(a)
	if err != nil {
		return false, err
	}
	field := strconv.Itoa(index)
	sealed, err := s.sealValue(ctx, resource, id+"/"+field, plain)
	if err != nil {
		return false, err
	}
	counter := fFailed
	if a.StatusCode/100 == 2 {
		counter = fCompleted
	}
	n, err := recordScript.Run(ctx, s.rdb, []string{s.jobKey(id), s.resKey(id)}, field, sealed, counter, in, out).Int()
	return n == 1, err
}

// answeredSet reports, for each line index of idx, whether it has an
// answer.
func (s *store) answeredSet(ctx context.Context, id string, idx []int) ([]bool, error) {
	out := make([]bool, len(idx))
	if len(idx) == 0 {
		return out, nil
	}
	fields := make([]string, len(idx))
	for k, i := range idx {
		fields[k] = strconv.Itoa(i)
	}
	// HMGET returns the values; only their presence matters, and answers
	// are small next to a round trip per line.
	vals, err := s.rdb.HMGet(ctx, s.resKey(id), fields...).Result()
	if err != nil {
		return nil, err
	}
	for k, v := range vals {
		out[k] = v != nil
	}
	return out, nil
}

// answers returns the answers of the lines idx; a line without one is
// nil.
func (s *store) answers(ctx context.Context, resource, id string, idx []int) ([]*answer, error) {
	if len(idx) == 0 {
		return nil, nil
	}
	fields := make([]string, len(idx))
	for k, i := range idx {
		fields[k] = strconv.Itoa(i)
	}
	vals, err := s.rdb.HMGet(ctx, s.resKey(id), fields...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]*answer, len(vals))
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue
		}
		plain, err := s.openValue(ctx, resource, id+"/"+fields[i], []byte(str))
		if err != nil {
			return nil, err
		}
		var a answer
		if err := json.Unmarshal(plain, &a); err != nil {
			return nil, err
		}
		out[i] = &a
	}
	return out, nil
}

// finish forgets an ended job's lines and progress; the batch object
// stays on the batches stream.
func (s *store) finish(ctx context.Context, id string) error {
	pipe := s.rdb.TxPipeline()
	pipe.Set(ctx, s.endedKey(id), "1", endedTTL)
	pipe.SRem(ctx, s.activeKey(), id)
	pipe.Del(ctx, s.resKey(id), s.jobKey(id), s.leaseKey(id))
	_, err := pipe.Exec(ctx)
	return err
}

// active lists the jobs not yet ended.
func (s *store) active(ctx context.Context) ([]string, error) {
	return s.rdb.SMembers(ctx, s.activeKey()).Result()
}

// lease takes or renews the lease of job id for instance.
var leaseScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`)

func (s *store) lease(ctx context.Context, id, instance string, ttl time.Duration) (bool, error) {
	n, err := leaseScript.Run(ctx, s.rdb, []string{s.leaseKey(id)}, instance, ttl.Milliseconds()).Int()
	return n == 1, err
}

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

func (s *store) release(ctx context.Context, id, instance string) error {
	return releaseScript.Run(ctx, s.rdb, []string{s.leaseKey(id)}, instance).Err()
}
