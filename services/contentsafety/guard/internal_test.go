package guard

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/events"
)

// TestBusyWhenEverySlotIsTaken: a check that finds every slot taken
// until its timeout reports the guard busy, without calling the server
// (none listens here).
func TestBusyWhenEverySlotIsTaken(t *testing.T) {
	t.Parallel()
	g, err := New(Config{URL: "http://127.0.0.1:1", Model: "m", Concurrency: 2, Timeout: 50 * time.Millisecond}, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	g.slots <- struct{}{}
	g.slots <- struct{}{}
	_, err = g.Check(t.Context(), events.DirectionPrompt, []string{"text"})
	var u *UnavailableError
	if !errors.As(err, &u) || u.Reason != ReasonBusy {
		t.Fatalf("Check with every slot taken = %v, want busy", err)
	}
}
