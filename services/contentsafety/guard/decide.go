package guard

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
)

// Outcome is what became of the guard stage for one text. Outcomes are
// metric labels.
type Outcome string

// Outcomes.
const (
	// OutcomeSkipped: no guard model is configured, or the policy turns
	// it off for the direction; the rules decide alone.
	OutcomeSkipped Outcome = "skipped"
	// OutcomeRated: the guard model rated the text; merge its Result.
	OutcomeRated Outcome = "rated"
	// OutcomeFailedOpen: the guard model was unavailable and the policy
	// fails open; the rules decide alone.
	OutcomeFailedOpen Outcome = "failed_open"
	// OutcomeFailedClosed: the guard model was unavailable and the policy
	// fails closed; the text is blocked.
	OutcomeFailedClosed Outcome = "failed_closed"
	// OutcomeError: the check ended for a reason that is not the guard
	// model's (the caller's context ended); nothing is decided, and the
	// caller returns Err so the record is processed again.
	OutcomeError Outcome = "error"
)

// Decision is what the guard stage contributes to a text's verdict.
type Decision struct {
	Outcome Outcome
	// Result is the guard model's verdict, to merge with the rules'
	// result with classifier.Merge; the zero Result (which merges as
	// "nothing found") unless Outcome is OutcomeRated.
	Result classifier.Result
	// Blocked is set for OutcomeFailedClosed: the text is blocked as
	// filtered whatever the rules found.
	Blocked bool
	// Err is the failure behind OutcomeFailedOpen, OutcomeFailedClosed
	// and OutcomeError (an *UnavailableError for the first two).
	Err error
}

// Decide applies a policy's guard settings for one direction to the
// outcome of Check: skipped when the policy turns the guard off, rated
// when Check answered, and on an unavailable guard model, blocked when
// the policy fails closed and left to the rules when it fails open.
func Decide(rules control.GuardRules, res classifier.Result, err error) Decision {
	switch {
	case !rules.Applies():
		return Decision{Outcome: OutcomeSkipped}
	case err == nil:
		return Decision{Outcome: OutcomeRated, Result: res}
	case !IsUnavailable(err):
		return Decision{Outcome: OutcomeError, Err: err}
	case rules.FailsClosed():
		return Decision{Outcome: OutcomeFailedClosed, Blocked: true, Err: err}
	default:
		return Decision{Outcome: OutcomeFailedOpen, Err: err}
	}
}

// Evaluate is the guard stage of one text: Check where rules let the
// guard rate dir's texts, then Decide; the decision is counted. A nil
// Guard (no guard model configured) skips, so a stage can call it
// unconditionally.
func (g *Guard) Evaluate(ctx context.Context, rules control.GuardRules, dir events.Direction, texts []string) Decision {
	if g == nil {
		return Decision{Outcome: OutcomeSkipped}
	}
	var d Decision
	if rules.Applies() {
		res, err := g.Check(ctx, dir, texts)
		d = Decide(rules, res, err)
	} else {
		d = Decision{Outcome: OutcomeSkipped}
	}
	g.m.decisions.With(prometheus.Labels{"direction": string(dir), "outcome": string(d.Outcome)}).Inc()
	return d
}
