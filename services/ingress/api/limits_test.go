package api

import (
	"math"
	"testing"
	"time"
)

// TestRequestLargerThanTheBucketNeverWaits: a request wanting more tokens
// than the deployment's whole bucket is refused at once as never fitting,
// takes nothing, and leaves the budget to requests that fit.
func TestRequestLargerThanTheBucketNeverWaits(t *testing.T) {
	t.Parallel()
	var l limiter
	now := time.Unix(1_700_000_000, 0)
	for _, tokens := range []int{1001, math.MaxInt} {
		a := l.admit("acme/small", 1, false, tokens, now)
		if a.ok || !a.neverFits || a.retryAfter != 0 || a.tokensPerMinute != 1000 {
			t.Fatalf("%d tokens against 1,000 per minute: %+v", tokens, a)
		}
	}
	if a := l.admit("acme/big", 100, true, 20_000, now); a.ok || !a.neverFits || a.tokensPerMinute != 10_000 {
		t.Fatalf("throttled to 10,000 tokens per minute, 20,000 tokens: %+v", a)
	}
	if a := l.admit("acme/small", 1, false, 1000, now); !a.ok || a.requestsRemaining != 5 || a.tokensRemaining != 0 {
		t.Fatalf("a request of exactly the whole budget after the refusals: %+v", a)
	}
}
