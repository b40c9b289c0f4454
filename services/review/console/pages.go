package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/review/detect"
	"github.com/terroir-ai/terroir/services/review/store"
)

const (
	// maxJustification bounds a justification, in characters.
	maxJustification = 1000
	// maxIDLength bounds request IDs and resource names in forms.
	maxIDLength = 200
	// queueLimit and auditLimit bound the rows of the case queue and the
	// audit trail pages.
	queueLimit = 200
	auditLimit = 200
)

// notices are the fixed confirmations shown after a form was handled.
var notices = map[string]string{
	"requested": "Your request for access was sent to the managers.",
	"approved":  "Access approved.",
	"denied":    "Access denied.",
	"decided":   "Decision recorded.",
}

// Decisions a reviewer can take on a case, and the enforcement each
// publishes (none for no action and warn).
var decisions = []struct{ Value, Label, Enforcement string }{
	{detect.DecisionNoAction, "No action", ""},
	{detect.DecisionWarn, "Warn the customer", ""},
	{detect.DecisionThrottle, "Throttle the resource", "throttle"},
	{detect.DecisionSuspend, "Suspend the resource", "suspend"},
}

// geoView is a geography as the home page shows it to one person.
type geoView struct {
	Name, Region string
	// CanOpen: the person is located in the review region.
	CanOpen bool
	// Grant is the person's live grant, Lapsed their last one if no
	// longer in force.
	Grant, Lapsed *Grant
}

type requestView struct {
	AccessRequest
	State string
	Own   bool
}

type homeData struct {
	Notice     string
	Geos       []geoView
	Openable   []string
	Mine       []requestView
	Pending    []requestView
	MaxMinutes int
}

func (c *Console) home(w http.ResponseWriter, r *http.Request, who caller) {
	ctx := r.Context()
	now := c.now()
	data := homeData{Notice: notices[r.URL.Query().Get("m")], MaxMinutes: int(MaxGrant / time.Minute)}
	for _, g := range c.cfg.Geos {
		v := geoView{Name: g, Region: region(g), CanOpen: locatedFor(who.Person, g)}
		if v.CanOpen {
			data.Openable = append(data.Openable, g)
			gr, ok, err := c.access.grant(ctx, g, who.Name)
			if err != nil {
				c.unavailable(w, who, "grant not read", err, zap.String("geo", g))
				return
			}
			if ok && gr.liveAt(now) {
				v.Grant = &gr
			} else if ok {
				v.Lapsed = &gr
			}
		}
		data.Geos = append(data.Geos, v)
		reqs, err := c.access.recent(ctx, g, func(a AccessRequest) bool {
			return a.Requester == who.Name || (who.IsManager() && a.statusAt(now) == StatusPending)
		})
		if err != nil {
			c.unavailable(w, who, "access requests not read", err, zap.String("geo", g))
			return
		}
		for _, a := range reqs {
			rv := requestView{AccessRequest: a, State: a.statusAt(now), Own: a.Requester == who.Name}
			if rv.Own {
				data.Mine = append(data.Mine, rv)
			}
			if who.IsManager() && rv.State == StatusPending {
				data.Pending = append(data.Pending, rv)
			}
		}
	}
	c.render(w, http.StatusOK, "home", page{Title: "Review console", Person: who.Person, CSRF: who.csrf, Data: data})
}

// requestAccess: a person asks for access to one geography's flagged
// records.
func (c *Console) requestAccess(w http.ResponseWriter, r *http.Request, who caller) {
	ctx := r.Context()
	g := strings.TrimSpace(r.PostForm.Get("geo"))
	if !c.served(g) {
		c.message(w, http.StatusBadRequest, who, "bad-request", "Unknown geography", "Choose a geography served by this console.")
		return
	}
	if !locatedFor(who.Person, g) {
		c.message(w, http.StatusForbidden, who, "wrong-location", "Not located in the review region",
			fmt.Sprintf("Records of %s are reviewed from %s only; you are located in %s.", g, region(g), who.Location))
		return
	}
	justification := strings.TrimSpace(r.PostForm.Get("justification"))
	if justification == "" || utf8.RuneCountInString(justification) > maxJustification || !utf8.ValidString(justification) {
		c.message(w, http.StatusBadRequest, who, "bad-request", "Justification needed",
			fmt.Sprintf("Say why you need access, in at most %d characters.", maxJustification))
		return
	}
	d, ok := parseMinutes(r.PostForm.Get("minutes"), MaxGrant)
	if !ok {
		c.message(w, http.StatusBadRequest, who, "bad-request", "Duration out of range",
			fmt.Sprintf("Ask for 1 to %d minutes.", int(MaxGrant/time.Minute)))
		return
	}
	now := c.now()
	req := AccessRequest{ID: newID("acc"), Geo: g, Requester: who.Name, Justification: justification, Duration: d,
		Status: StatusPending, CreatedAt: now}
	if _, err := c.cfg.Audit.Append(ctx, g, events.AuditEntry{Actor: who.Name, Action: events.AuditAccessRequested, Subject: req.ID,
		Detail: map[string]string{"duration": d.String(), "justification": justification}, At: now}); err != nil {
		c.unavailable(w, who, "access request not audited", err, zap.String("geo", g), zap.String("access_request", req.ID))
		return
	}
	if err := c.access.create(ctx, req); err != nil {
		c.unavailable(w, who, "access request not stored", err, zap.String("geo", g), zap.String("access_request", req.ID))
		return
	}
	c.metrics.access.WithLabelValues(g, "requested").Inc()
	c.log.Info("access requested", zap.String("person", who.Name), zap.String("geo", g), zap.String("access_request", req.ID),
		zap.Duration("duration", d))
	seeOther(w, r, "/?m=requested")
}

// parseMinutes reads a whole number of minutes from 1 to max.
func parseMinutes(s string, max time.Duration) (time.Duration, bool) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || time.Duration(n)*time.Minute > max {
		return 0, false
	}
	return time.Duration(n) * time.Minute, true
}

// answerRefusal says why approver may not answer req, or "".
func (c *Console) answerRefusal(approver Person, req AccessRequest, approving bool) string {
	if !approver.IsManager() {
		return "Only managers answer requests for access."
	}
	if req.Requester == approver.Name {
		return "You cannot answer your own request for access: another manager must."
	}
	if !approving {
		return ""
	}
	requester, ok := c.cfg.People.Person(req.Requester)
	if !ok {
		return fmt.Sprintf("%s is no longer in the people directory.", req.Requester)
	}
	if !locatedFor(requester, req.Geo) {
		return fmt.Sprintf("%s is located in %s; records of %s are reviewed from %s only.",
			requester.Name, requester.Location, req.Geo, region(req.Geo))
	}
	return ""
}

func (c *Console) approve(w http.ResponseWriter, r *http.Request, who caller) {
	c.answer(w, r, who, true)
}
func (c *Console) deny(w http.ResponseWriter, r *http.Request, who caller) {
	c.answer(w, r, who, false)
}

// answer approves (for at most the requested time) or denies a pending
// request. The audit entry is written first: if it cannot be, the request
// stays pending.
func (c *Console) answer(w http.ResponseWriter, r *http.Request, who caller, approving bool) {
	ctx := r.Context()
	g, id := r.PathValue("geo"), r.PathValue("id")
	event := map[bool]string{true: "approved", false: "denied"}[approving]
	if !who.IsManager() {
		c.refuseAnswer(w, who, g, id, "Only managers answer requests for access.")
		return
	}
	req, err := c.access.get(ctx, g, id)
	if errors.Is(err, errNoRequest) {
		c.writeNotFound(w)
		return
	}
	if err != nil {
		c.unavailable(w, who, "access request not read", err, zap.String("geo", g), zap.String("access_request", id))
		return
	}
	if why := c.answerRefusal(who.Person, req, approving); why != "" {
		c.refuseAnswer(w, who, g, id, why)
		return
	}
	now := c.now()
	if req.statusAt(now) != StatusPending {
		c.message(w, http.StatusConflict, who, "not-pending", "Already answered",
			"This request has already been answered or has lapsed.")
		return
	}
	granted := time.Duration(0)
	if approving {
		var ok bool
		if granted, ok = parseMinutes(r.PostForm.Get("minutes"), min(req.Duration, MaxGrant)); !ok {
			c.message(w, http.StatusBadRequest, who, "bad-request", "Duration out of range",
				fmt.Sprintf("Approve 1 to %d minutes: at most what was asked for.", int(min(req.Duration, MaxGrant)/time.Minute)))
			return
		}
	}
	entry := events.AuditEntry{Actor: who.Name, Action: events.AuditAccessDenied, Subject: req.ID,
		Detail: map[string]string{"requester": req.Requester}, At: now}
	grantID := newID("grant")
	expires := now.Add(granted)
	if approving {
		entry.Action = events.AuditAccessApproved
		entry.Detail["grant_id"] = grantID
		entry.Detail["duration"] = granted.String()
		entry.Detail["expires_at"] = expires.Format(time.RFC3339)
	}
	if _, err := c.cfg.Audit.Append(ctx, g, entry); err != nil {
		c.unavailable(w, who, "answer to an access request not audited", err, zap.String("geo", g), zap.String("access_request", id))
		return
	}
	_, err = c.access.decide(ctx, g, id, now,
		func(stored AccessRequest) error {
			if why := c.answerRefusal(who.Person, stored, approving); why != "" {
				return errors.New(why)
			}
			return nil
		},
		func(a *AccessRequest) *Grant {
			a.DecidedBy, a.DecidedAt = who.Name, now
			if !approving {
				a.Status = StatusDenied
				return nil
			}
			a.Status, a.Granted, a.GrantID, a.ExpiresAt = StatusApproved, granted, grantID, expires
			return &Grant{ID: grantID, Geo: g, Person: a.Requester, Request: a.ID, ApprovedBy: who.Name, Start: now, ExpiresAt: expires}
		})
	switch {
	case errors.Is(err, errNoRequest):
		c.writeNotFound(w)
		return
	case errors.Is(err, errNotPending), errors.Is(err, errRaceDecided):
		c.message(w, http.StatusConflict, who, "not-pending", "Already answered",
			"This request has already been answered or has lapsed.")
		return
	case err != nil:
		c.unavailable(w, who, "answer to an access request not stored", err, zap.String("geo", g), zap.String("access_request", id))
		return
	}
	c.metrics.access.WithLabelValues(g, event).Inc()
	c.log.Info("access "+event, zap.String("person", who.Name), zap.String("geo", g), zap.String("access_request", id),
		zap.String("requester", req.Requester), zap.Duration("duration", granted))
	seeOther(w, r, "/?m="+event)
}

func (c *Console) refuseAnswer(w http.ResponseWriter, who caller, g, id, why string) {
	c.metrics.access.WithLabelValues(g, "refused").Inc()
	c.log.Warn("answer to an access request refused", zap.String("person", who.Name), zap.String("geo", g), zap.String("access_request", id))
	c.message(w, http.StatusForbidden, who, "refused", "Refused", why)
}

// liveGrant returns who's live grant for g; a person not located in g's
// review region never has one.
func (c *Console) liveGrant(ctx context.Context, who Person, g string) (Grant, bool, error) {
	if !locatedFor(who, g) {
		return Grant{}, false, nil
	}
	gr, ok, err := c.access.grant(ctx, g, who.Name)
	if err != nil || !ok || !gr.liveAt(c.now()) {
		return Grant{}, false, err
	}
	return gr, true, nil
}

func (c *Console) noGrant(w http.ResponseWriter, who caller, g string) {
	text := fmt.Sprintf("You have no live access grant for %s. Ask for access on the console's home page; a manager must approve it.", g)
	if !locatedFor(who.Person, g) {
		text = fmt.Sprintf("Records of %s are reviewed from %s only; you are located in %s.", g, region(g), who.Location)
	}
	c.message(w, http.StatusForbidden, who, "no-grant", "No access", text)
}

// canSeeQueue: the case queue (metadata only) of g is shown to the people
// who could be granted access to it and to managers.
func canSeeQueue(p Person, g string) bool { return locatedFor(p, g) || p.IsManager() }

type queueData struct {
	Geo   string
	Cases []detect.Case
}

func (c *Console) caseQueue(w http.ResponseWriter, r *http.Request, who caller) {
	g := r.PathValue("geo")
	if !canSeeQueue(who.Person, g) {
		c.noGrant(w, who, g)
		return
	}
	cases, err := c.cfg.Cases.Cases(r.Context(), g, queueLimit)
	if err != nil {
		c.unavailable(w, who, "cases not read", err, zap.String("geo", g))
		return
	}
	c.render(w, http.StatusOK, "cases", page{Title: "Cases of " + g, Person: who.Person, CSRF: who.csrf, Data: queueData{Geo: g, Cases: cases}})
}

type caseData struct {
	Notice    string
	Case      detect.Case
	Grant     *Grant
	Decisions any
}

func (c *Console) caseDetail(w http.ResponseWriter, r *http.Request, who caller) {
	ctx := r.Context()
	g, id := r.PathValue("geo"), r.PathValue("id")
	if !canSeeQueue(who.Person, g) {
		c.noGrant(w, who, g)
		return
	}
	cs, ok := c.caseOf(w, r, who, g, id)
	if !ok {
		return
	}
	data := caseData{Notice: notices[r.URL.Query().Get("m")], Case: cs, Decisions: decisions}
	gr, live, err := c.liveGrant(ctx, who.Person, g)
	if err != nil {
		c.unavailable(w, who, "grant not read", err, zap.String("geo", g))
		return
	}
	if live {
		data.Grant = &gr
	}
	c.render(w, http.StatusOK, "case", page{Title: "Case " + cs.ID, Person: who.Person, CSRF: who.csrf, Data: data})
}

// caseOf reads case id of geo, answering not-found or unavailable itself
// when it cannot.
func (c *Console) caseOf(w http.ResponseWriter, r *http.Request, who caller, g, id string) (detect.Case, bool) {
	cs, err := c.cfg.Cases.Case(r.Context(), g, id)
	if errors.Is(err, detect.ErrNoCase) {
		c.writeNotFound(w)
		return cs, false
	}
	if err != nil {
		c.unavailable(w, who, "case not read", err, zap.String("geo", g), zap.String("case_id", id))
		return cs, false
	}
	return cs, true
}

// decide records a decision on an open case. Throttle and suspend are
// published as enforcement on the control topic of the resource's home
// geography before the case is closed, so a failed publication leaves the
// case open to be decided again.
func (c *Console) decide(w http.ResponseWriter, r *http.Request, who caller) {
	ctx := r.Context()
	g, id := r.PathValue("geo"), r.PathValue("id")
	decision := r.PostForm.Get("decision")
	enforcement, known := "", false
	for _, d := range decisions {
		if d.Value == decision {
			enforcement, known = d.Enforcement, true
		}
	}
	if !known {
		c.message(w, http.StatusBadRequest, who, "bad-request", "Unknown decision", "Choose one of the decisions offered.")
		return
	}
	gr, live, err := c.liveGrant(ctx, who.Person, g)
	if err != nil {
		c.unavailable(w, who, "grant not read", err, zap.String("geo", g))
		return
	}
	if !live {
		c.noGrant(w, who, g)
		return
	}
	cs, ok := c.caseOf(w, r, who, g, id)
	if !ok {
		return
	}
	if cs.Status != detect.StatusOpen {
		c.message(w, http.StatusConflict, who, "already-decided", "Already decided",
			fmt.Sprintf("Case %s was decided already: %s, by %s.", cs.ID, cs.Decision, cs.DecidedBy))
		return
	}
	now := c.now()
	if _, err := c.cfg.Audit.Append(ctx, g, events.AuditEntry{Actor: who.Name, Action: events.AuditDecision, Subject: cs.ID,
		Detail: map[string]string{"decision": decision, "case_id": cs.ID, "resource": cs.Resource, "grant_id": gr.ID}, At: now}); err != nil {
		c.unavailable(w, who, "decision not audited", err, zap.String("geo", g), zap.String("case_id", id))
		return
	}
	if enforcement != "" {
		if err := c.enforce(ctx, cs, enforcement, who.Name, now); err != nil {
			c.unavailable(w, who, "enforcement not published", err, zap.String("geo", g), zap.String("case_id", id),
				zap.String("resource", cs.Resource))
			return
		}
	}
	if _, err := c.cfg.Cases.Decide(ctx, g, id, decision, who.Name); err != nil {
		// Someone else may have decided it meanwhile.
		if cur, rerr := c.cfg.Cases.Case(ctx, g, id); rerr == nil && cur.Status != detect.StatusOpen {
			c.message(w, http.StatusConflict, who, "already-decided", "Already decided",
				fmt.Sprintf("Case %s was decided meanwhile: %s, by %s.", cur.ID, cur.Decision, cur.DecidedBy))
			return
		}
		c.unavailable(w, who, "decision not stored", err, zap.String("geo", g), zap.String("case_id", id))
		return
	}
	c.metrics.decisions.WithLabelValues(g, decision).Inc()
	c.log.Info("case decided", zap.String("person", who.Name), zap.String("geo", g), zap.String("case_id", id),
		zap.String("resource", cs.Resource), zap.String("decision", decision))
	seeOther(w, r, "/cases/"+g+"/"+id+"?m=decided")
}

// enforce publishes action against the case's resource on the control
// topic of the resource's home geography, where ingress applies it.
func (c *Console) enforce(ctx context.Context, cs detect.Case, action, person string, at time.Time) error {
	home := cs.Geo
	if res, ok := c.cfg.Resources.Resource(cs.Resource); ok && res.Location != "" {
		home = res.Location
	}
	spec, err := json.Marshal(control.Enforcement{Resource: cs.Resource, Action: action, Case: cs.ID, At: at})
	if err != nil {
		return err
	}
	return c.cfg.Publisher.Publish(ctx, home, events.ControlChange{Kind: events.ControlEnforcement, ID: cs.Resource,
		Resource: cs.Resource, Actor: "review:" + person, At: at, Spec: spec})
}

// Lookup outcomes, as audited and counted.
const (
	outcomeFound      = "found"
	outcomeNoGrant    = "no_grant"
	outcomeNotFlagged = "not_flagged"
	outcomeNotFound   = "not_found"
	outcomeNoContent  = "no_content_stored"
)

type recordData struct {
	Record                               store.Record
	Case                                 detect.Case
	Prompt, Output, PromptFilter, Filter string
	Grant                                Grant
	Decisions                            any
}

// lookup is the point-wise lookup of one request ID: a live grant for the
// geography (and the person located in its review region), then the ID
// must be flagged, then the record of that resource within 30 days. Every
// way of not finding a record answers with the same page.
func (c *Console) lookup(w http.ResponseWriter, r *http.Request, who caller) {
	ctx := r.Context()
	g := strings.TrimSpace(r.PostForm.Get("geo"))
	resource := strings.TrimSpace(r.PostForm.Get("resource"))
	id := strings.TrimSpace(r.PostForm.Get("request_id"))
	if !c.served(g) || !validID(resource) || !validID(id) {
		c.message(w, http.StatusBadRequest, who, "bad-request", "Bad lookup",
			"Give one geography served here, one resource and one request ID.")
		return
	}
	audit := func(outcome string, extra ...string) bool {
		detail := map[string]string{"outcome": outcome, "resource": resource}
		for i := 0; i+1 < len(extra); i += 2 {
			detail[extra[i]] = extra[i+1]
		}
		c.metrics.lookups.WithLabelValues(g, outcome).Inc()
		c.log.Info("lookup", zap.String("person", who.Name), zap.String("geo", g), zap.String("resource", resource),
			zap.String("request_id", id), zap.String("outcome", outcome))
		if _, err := c.cfg.Audit.Append(ctx, g, events.AuditEntry{Actor: who.Name, Action: events.AuditLookup, Subject: id,
			Detail: detail, At: c.now()}); err != nil {
			c.unavailable(w, who, "lookup not audited", err, zap.String("geo", g), zap.String("request_id", id))
			return false
		}
		return true
	}
	notFound := func(outcome string, extra ...string) {
		if audit(outcome, extra...) {
			c.writeNotFound(w)
		}
	}

	gr, live, err := c.liveGrant(ctx, who.Person, g)
	if err != nil {
		c.unavailable(w, who, "grant not read", err, zap.String("geo", g))
		return
	}
	if !live {
		if audit(outcomeNoGrant) {
			c.noGrant(w, who, g)
		}
		return
	}
	caseID, flagged, err := c.cfg.Cases.Flagged(ctx, g, id)
	if err != nil {
		c.unavailable(w, who, "flag not read", err, zap.String("geo", g), zap.String("request_id", id))
		return
	}
	if !flagged {
		notFound(outcomeNotFlagged, "grant_id", gr.ID)
		return
	}
	cs, err := c.cfg.Cases.Case(ctx, g, caseID)
	if errors.Is(err, detect.ErrNoCase) {
		notFound(outcomeNotFlagged, "grant_id", gr.ID)
		return
	}
	if err != nil {
		c.unavailable(w, who, "case not read", err, zap.String("geo", g), zap.String("case_id", caseID))
		return
	}
	if cs.Resource != resource {
		notFound(outcomeNotFound, "grant_id", gr.ID, "case_id", caseID)
		return
	}
	rec, err := c.cfg.Records.Lookup(ctx, g, resource, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		notFound(outcomeNotFound, "grant_id", gr.ID, "case_id", caseID)
		return
	case errors.Is(err, store.ErrNoContentStored):
		if audit(outcomeNoContent, "grant_id", gr.ID, "case_id", caseID) {
			c.message(w, http.StatusOK, who, "no-content", "No content stored",
				"No content stored for this resource: its prompts and outputs are not kept for abuse monitoring.")
		}
		return
	case err != nil:
		c.unavailable(w, who, "record not read", err, zap.String("geo", g), zap.String("request_id", id))
		return
	}
	if rec.Resource != resource || rec.RequestID != id || c.now().Sub(rec.CreatedAt) > store.Retention {
		notFound(outcomeNotFound, "grant_id", gr.ID, "case_id", caseID)
		return
	}
	if !audit(outcomeFound, "grant_id", gr.ID, "case_id", caseID) {
		return
	}
	// The view is audited before a byte of the record leaves.
	if _, err := c.cfg.Audit.Append(ctx, g, events.AuditEntry{Actor: who.Name, Action: events.AuditView, Subject: id,
		Detail: map[string]string{"resource": resource, "case_id": caseID, "grant_id": gr.ID}, At: c.now()}); err != nil {
		c.unavailable(w, who, "view not audited", err, zap.String("geo", g), zap.String("request_id", id))
		return
	}
	c.render(w, http.StatusOK, "record", page{Title: "Request " + id, Person: who.Person, CSRF: who.csrf, Data: recordData{
		Record: rec, Case: cs, Grant: gr, Decisions: decisions,
		Prompt: pretty(rec.Prompt), Output: pretty(rec.Output),
		PromptFilter: pretty(rec.PromptFilterResults), Filter: pretty(rec.ContentFilterResults),
	}})
}

// validID accepts a request ID or resource name as typed: printable, no
// spaces, bounded.
func validID(s string) bool {
	if s == "" || len(s) > maxIDLength {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return utf8.ValidString(s)
}

type auditData struct {
	Geo     string
	Entries []events.AuditEntry
}

// auditTrail shows managers a geography's latest audit entries.
func (c *Console) auditTrail(w http.ResponseWriter, r *http.Request, who caller) {
	g := r.PathValue("geo")
	if !who.IsManager() {
		c.message(w, http.StatusForbidden, who, "managers-only", "Managers only", "Only managers read the audit trail.")
		return
	}
	entries, err := c.cfg.Audit.Recent(r.Context(), g, auditLimit)
	if err != nil {
		c.unavailable(w, who, "audit trail not read", err, zap.String("geo", g))
		return
	}
	c.render(w, http.StatusOK, "audit", page{Title: "Audit trail of " + g, Person: who.Person, CSRF: who.csrf,
		Data: auditData{Geo: g, Entries: entries}})
}
