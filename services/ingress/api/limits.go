package api

import (
	"math"
	"sync"
	"time"
)

// Rate limits follow Azure's quota model: a deployment's capacity is in
// thousands of tokens per minute, and it may make 6 requests per minute
// per thousand tokens per minute. Each ingress instance enforces the full
// limit on what it admits.
const requestsPerKTPM = 6

// throttleFactor scales the limits of a resource that abuse review
// decided to throttle.
const throttleFactor = 0.1

// bucket is a token bucket refilled continuously at rate per second up to
// size.
type bucket struct {
	size, level, rate float64
	at                time.Time
}

func (b *bucket) refill(now time.Time, size float64) {
	if b.at.IsZero() {
		b.level, b.at = size, now
	}
	b.size, b.rate = size, size/60
	b.level = math.Min(b.size, b.level+now.Sub(b.at).Seconds()*b.rate)
	b.at = now
}

// wait is how long until n are available.
func (b *bucket) wait(n float64) time.Duration {
	if b.level >= n {
		return 0
	}
	return time.Duration((n - b.level) / b.rate * float64(time.Second))
}

// limiter holds a request and a token bucket per deployment.
type limiter struct {
	mu      sync.Mutex
	buckets map[string]*[2]bucket
}

// admission is a limiter's answer.
type admission struct {
	ok bool
	// neverFits: the request wants more tokens than the whole bucket
	// holds; no wait would admit it, and it took nothing.
	neverFits         bool
	tokensPerMinute   int64
	retryAfter        time.Duration
	requestsRemaining int64
	tokensRemaining   int64
}

// admit takes one request and tokens from key's buckets sized for
// capacity (thousands of tokens per minute), or says how long to wait.
func (l *limiter) admit(key string, capacity int, throttled bool, tokens int, now time.Time) admission {
	tpm := float64(capacity) * 1000
	rpm := float64(capacity) * requestsPerKTPM
	if throttled {
		tpm, rpm = math.Max(1000, tpm*throttleFactor), math.Max(1, rpm*throttleFactor)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = map[string]*[2]bucket{}
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &[2]bucket{}
		l.buckets[key] = b
	}
	req, tok := &b[0], &b[1]
	req.refill(now, rpm)
	tok.refill(now, tpm)
	n := float64(tokens)
	if n > tpm {
		return admission{neverFits: true, tokensPerMinute: int64(tpm), requestsRemaining: int64(req.level), tokensRemaining: int64(tok.level)}
	}
	if w := max(req.wait(1), tok.wait(n)); w > 0 {
		return admission{retryAfter: w, tokensPerMinute: int64(tpm), requestsRemaining: int64(req.level), tokensRemaining: int64(tok.level)}
	}
	req.level--
	tok.level -= n
	return admission{ok: true, tokensPerMinute: int64(tpm), requestsRemaining: int64(req.level), tokensRemaining: int64(tok.level)}
}
