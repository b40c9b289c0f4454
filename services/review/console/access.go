package console

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/services/review/signing"
)

const (
	// MaxGrant is the longest just-in-time access a manager can approve.
	MaxGrant = 8 * time.Hour
	// MinGrant is the shortest access that can be asked for or approved.
	MinGrant = time.Minute
	// requestOpenFor is how long a request waits for a manager's answer
	// before it lapses.
	requestOpenFor = 24 * time.Hour
	// requestKeptFor is how long requests stay listed in the console; the
	// audit trail keeps every request, approval and denial for good.
	requestKeptFor = 7 * 24 * time.Hour
	// listLimit bounds the requests read for one page.
	listLimit = 200
)

// Request statuses.
const (
	StatusPending  = "pending"
	StatusApproved = "approved"
	StatusDenied   = "denied"
	// StatusLapsed is a pending request nobody answered in time.
	StatusLapsed = "lapsed"
)

var (
	errNoRequest   = errors.New("no such access request")
	errNotPending  = errors.New("the request has already been answered or has lapsed")
	errRaceDecided = errors.New("the request was answered by someone else meanwhile")
)

// AccessRequest is a person's request for just-in-time access to one
// geography's flagged records.
type AccessRequest struct {
	ID            string        `json:"id"`
	Geo           string        `json:"geo"`
	Requester     string        `json:"requester"`
	Justification string        `json:"justification"`
	Duration      time.Duration `json:"duration"`
	Status        string        `json:"status"`
	CreatedAt     time.Time     `json:"created_at"`
	DecidedBy     string        `json:"decided_by,omitempty"`
	DecidedAt     time.Time     `json:"decided_at,omitzero"`
	// Granted is the approved duration, at most Duration.
	Granted   time.Duration `json:"granted,omitempty"`
	GrantID   string        `json:"grant_id,omitempty"`
	ExpiresAt time.Time     `json:"expires_at,omitzero"`
}

// statusAt is the request's status at now: a pending request lapses
// after requestOpenFor.
func (r AccessRequest) statusAt(now time.Time) string {
	if r.Status == StatusPending && now.Sub(r.CreatedAt) >= requestOpenFor {
		return StatusLapsed
	}
	return r.Status
}

// Grant is live just-in-time access of one person to one geography's
// flagged records.
type Grant struct {
	ID         string    `json:"id"`
	Geo        string    `json:"geo"`
	Person     string    `json:"person"`
	Request    string    `json:"request"`
	ApprovedBy string    `json:"approved_by"`
	Start      time.Time `json:"start"`
	ExpiresAt  time.Time `json:"expires_at"`
	// Signature is the console's signature of the fields above
	// (package signing); a grant without a valid one gives no access.
	Signature string `json:"sig"`
}

// signed are the fields a grant's signature covers.
func (g Grant) signed() []string {
	return []string{g.ID, g.Person, g.Request, g.ApprovedBy,
		strconv.FormatInt(g.Start.UnixNano(), 10), strconv.FormatInt(g.ExpiresAt.UnixNano(), 10)}
}

// liveAt reports whether the grant is in force at now.
func (g Grant) liveAt(now time.Time) bool {
	return !now.Before(g.Start) && now.Before(g.ExpiresAt)
}

// access keeps requests and grants in the Redis of the geography they
// concern, under terroir:<geo>:review:. Grants are signed: one written
// to Redis by anyone but the console is ignored.
type access struct {
	redis  map[string]*redis.Client
	signer *signing.Signer
	log    *zap.Logger
}

func prefix(geo string) string                    { return "terroir:" + geo + ":review:" }
func requestKey(geo, id string) string            { return prefix(geo) + "access:" + id }
func requestIndexKey(geo string) string           { return prefix(geo) + "access-requests" }
func grantKey(geo, person string) string          { return prefix(geo) + "grant:" + person }
func newID(kind string) string                    { return kind + "_" + strings.ToLower(rand.Text()) }
func score(t time.Time) float64                   { return float64(t.UnixMilli()) }
func scoreArg(t time.Time) string                 { return fmt.Sprintf("%d", t.UnixMilli()) }
func (a *access) client(geo string) *redis.Client { return a.redis[geo] }

// create stores a new pending request.
func (a *access) create(ctx context.Context, r AccessRequest) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	rc := a.client(r.Geo)
	_, err = rc.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, requestKey(r.Geo, r.ID), raw, requestKeptFor)
		p.ZAdd(ctx, requestIndexKey(r.Geo), redis.Z{Score: score(r.CreatedAt), Member: r.ID})
		p.ZRemRangeByScore(ctx, requestIndexKey(r.Geo), "-inf", "("+scoreArg(r.CreatedAt.Add(-requestKeptFor)))
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing access request %s in %s: %w", r.ID, r.Geo, err)
	}
	return nil
}

// get returns one request of geo.
func (a *access) get(ctx context.Context, geo, id string) (AccessRequest, error) {
	raw, err := a.client(geo).Get(ctx, requestKey(geo, id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return AccessRequest{}, errNoRequest
	}
	if err != nil {
		return AccessRequest{}, fmt.Errorf("reading access request %s of %s: %w", id, geo, err)
	}
	var r AccessRequest
	if err := json.Unmarshal(raw, &r); err != nil {
		return AccessRequest{}, fmt.Errorf("decoding access request %s of %s: %w", id, geo, err)
	}
	return r, nil
}

// recent returns geo's requests of the last requestKeptFor, newest first,
// those keep accepts only.
func (a *access) recent(ctx context.Context, geo string, keep func(AccessRequest) bool) ([]AccessRequest, error) {
	rc := a.client(geo)
	ids, err := rc.ZRevRange(ctx, requestIndexKey(geo), 0, listLimit-1).Result()
	if err != nil {
		return nil, fmt.Errorf("listing access requests of %s: %w", geo, err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = requestKey(geo, id)
	}
	vals, err := rc.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("reading access requests of %s: %w", geo, err)
	}
	var out []AccessRequest
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue // expired meanwhile
		}
		var r AccessRequest
		if err := json.Unmarshal([]byte(s), &r); err != nil {
			continue
		}
		if keep(r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// decide moves a pending request to approved (with its grant) or denied,
// atomically: check sees the stored request and may refuse. A grant
// replaces any earlier grant of the same person and geography.
func (a *access) decide(ctx context.Context, geo, id string, now time.Time, check func(AccessRequest) error, apply func(*AccessRequest) *Grant) (AccessRequest, error) {
	rc := a.client(geo)
	key := requestKey(geo, id)
	var out AccessRequest
	err := rc.Watch(ctx, func(tx *redis.Tx) error {
		raw, err := tx.Get(ctx, key).Bytes()
		if errors.Is(err, redis.Nil) {
			return errNoRequest
		}
		if err != nil {
			return err
		}
		var r AccessRequest
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("decoding access request %s of %s: %w", id, geo, err)
		}
		if r.statusAt(now) != StatusPending {
			return errNotPending
		}
		if err := check(r); err != nil {
			return err
		}
		g := apply(&r)
		updated, err := json.Marshal(r)
		if err != nil {
			return err
		}
		var grant []byte
		if g != nil {
			if g.Signature, err = a.signer.Sign(ctx, signing.KindGrant, geo, g.signed()...); err != nil {
				return err
			}
			if grant, err = json.Marshal(g); err != nil {
				return err
			}
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, updated, redis.KeepTTL)
			if g != nil {
				// The key lapses with the grant; liveAt checks the
				// console's clock as well.
				p.Set(ctx, grantKey(geo, g.Person), grant, g.ExpiresAt.Sub(g.Start))
			}
			return nil
		})
		out = r
		return err
	}, key)
	if errors.Is(err, redis.TxFailedErr) {
		return AccessRequest{}, errRaceDecided
	}
	return out, err
}

// grant returns person's grant for geo, live or not.
func (a *access) grant(ctx context.Context, geo, person string) (Grant, bool, error) {
	raw, err := a.client(geo).Get(ctx, grantKey(geo, person)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Grant{}, false, nil
	}
	if err != nil {
		return Grant{}, false, fmt.Errorf("reading the grant of %s in %s: %w", person, geo, err)
	}
	var g Grant
	if err := json.Unmarshal(raw, &g); err != nil {
		return Grant{}, false, fmt.Errorf("decoding the grant of %s in %s: %w", person, geo, err)
	}
	if g.Person != person || g.Geo != geo {
		return Grant{}, false, nil
	}
	switch err := a.signer.Verify(ctx, g.Signature, signing.KindGrant, geo, g.signed()...); {
	case errors.Is(err, signing.ErrInvalid):
		a.log.Warn("grant without a valid signature: ignored", zap.String("geo", geo), zap.String("person", person))
		return Grant{}, false, nil
	case err != nil:
		return Grant{}, false, err
	}
	return g, true, nil
}
