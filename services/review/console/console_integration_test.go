package console

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/redistest"
	"github.com/terroir-ai/terroir/services/review/audit"
	"github.com/terroir-ai/terroir/services/review/detect"
	"github.com/terroir-ai/terroir/services/review/pki"
	"github.com/terroir-ai/terroir/services/review/signing"
	"github.com/terroir-ai/terroir/services/review/store"
)

// The real store, detection, audit trail and control plane are what the
// console's interfaces describe.
var (
	_ Records   = (*store.Store)(nil)
	_ Cases     = (*detect.Detector)(nil)
	_ Auditor   = (*audit.Log)(nil)
	_ Publisher = (*control.Publisher)(nil)
	_ Resources = (*control.State)(nil)
)

// The people of the tests. Each scenario uses its own reviewer, so grants
// of one never help another.
var testPeople = []Person{
	{Name: "ana.reviewer", Role: RoleReviewer, Location: "EEA"},
	{Name: "ben.reviewer", Role: RoleReviewer, Location: "EEA"},
	{Name: "cleo.reviewer", Role: RoleReviewer, Location: "EEA"},
	{Name: "dan.reviewer", Role: RoleReviewer, Location: "US"},
	{Name: "eli.reviewer", Role: RoleReviewer, Location: "EEA"},
	{Name: "fay.reviewer", Role: RoleReviewer, Location: "EEA"},
	{Name: "gus.reviewer", Role: RoleReviewer, Location: "EEA"},
	{Name: "hal.reviewer", Role: RoleReviewer, Location: "EEA"},
	{Name: "ivy.reviewer", Role: RoleReviewer, Location: "EEA"},
	{Name: "kim.reviewer", Role: RoleReviewer, Location: "EEA"},
	{Name: "lea.reviewer", Role: RoleReviewer, Location: "EEA"},
	{Name: "jonas.manager", Role: RoleManager, Location: "EEA"},
	{Name: "maria.manager", Role: RoleManager, Location: "EEA"},
}

// canary is in every prompt the tests store; it must reach a record page
// and nothing else (no log line, no metric).
const canary = "CANARY-7f3a91 tell me how to hurt someone"

// env is a running review stack: Kafka, Redis, control plane, store,
// detection, audit, and a console over them.
type env struct {
	bus     *bus.Bus
	state   *control.State
	pub     *control.Publisher
	redis   map[string]*redis.Client
	store   *store.Store
	det     *detect.Detector
	audit   *audit.Log
	ca      *pki.CA
	server  tls.Certificate
	people  *Directory
	logs    *observer.ObservedLogs
	log     *zap.Logger
	reg     *prometheus.Registry
	console *Console
	base    string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	core, logs := observer.New(zapcore.DebugLevel)
	e := &env{logs: logs, log: zap.New(core), reg: prometheus.NewRegistry()}
	cluster := bustest.New(t)
	e.bus = cluster.Bus(t, bustest.Options{Geos: []string{"eu", "us"}, Logger: e.log})
	addr := redistest.Start(t)
	e.redis = map[string]*redis.Client{}
	for _, g := range []string{"eu", "us"} {
		rc := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { _ = rc.Close() })
		e.redis[g] = rc
	}
	e.state = control.NewState(e.log)
	tables := map[string]*bus.Table{}
	for _, g := range []string{"eu", "us"} {
		tb, err := e.bus.NewTable(g, bus.StreamControl, e.state.Apply)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tb.Close)
		tables[g] = tb
	}
	e.pub = control.NewPublisher(e.bus, tables)
	var err error
	if e.store, err = store.New(store.Config{Bus: e.bus, Redis: e.redis, State: e.state, Geos: []string{"eu", "us"}, Log: e.log}); err != nil {
		t.Fatal(err)
	}
	if e.audit, err = audit.New(audit.Config{Bus: e.bus, Redis: e.redis, Geos: []string{"eu", "us"}, Log: e.log}); err != nil {
		t.Fatal(err)
	}
	rules := []detect.Rule{{Name: "violence_high", Kind: detect.KindSeverity, Threshold: 1, Window: time.Hour, MinSeverity: "high"}}
	if e.det, err = detect.New(detect.Config{Bus: e.bus, Redis: e.redis, Geos: []string{"eu", "us"}, Rules: rules,
		OnOpen: AuditCaseOpened(e.audit, e.log), Log: e.log}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() { done <- e.store.Run(ctx) }()
	go func() { done <- e.det.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("store or detection: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("store or detection did not stop")
			}
		}
	})

	if e.ca, err = pki.NewCA("Terroir review CA (test)"); err != nil {
		t.Fatal(err)
	}
	sp, err := e.ca.Server()
	if err != nil {
		t.Fatal(err)
	}
	if e.server, err = sp.TLSCertificate(); err != nil {
		t.Fatal(err)
	}
	if e.people, err = NewDirectory(testPeople...); err != nil {
		t.Fatal(err)
	}
	for _, r := range []control.Resource{
		{Name: "acme", Location: "eu", DataZone: "EU", ContentLogging: true},
		{Name: "acme-happy", Location: "eu", DataZone: "EU", ContentLogging: true},
		{Name: "optout", Location: "eu", DataZone: "EU", OptOutApproved: true, ContentLogging: false},
	} {
		r.CreatedAt = time.Now().UTC()
		spec, _ := json.Marshal(r)
		if err := e.pub.Publish(ctx, "eu", events.ControlChange{Kind: events.ControlResource, ID: r.Name, Actor: "test",
			At: time.Now().UTC(), Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
	e.console, e.base = e.newConsole(t, time.Now, e.store)
	return e
}

// newConsole starts a console over e's dependencies with its own clock
// and records.
func (e *env) newConsole(t *testing.T, now func() time.Time, records Records) (*Console, string) {
	t.Helper()
	var reg prometheus.Registerer
	if e.console == nil {
		reg = e.reg
	}
	signer, err := signing.New(e.bus.Keys())
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Addr: "127.0.0.1:0", Signer: signer, Certificate: e.server, ClientCAs: e.ca.Pool(), People: e.people,
		Geos: []string{"eu", "us"}, Redis: e.redis, Records: records, Cases: e.det, Audit: e.audit,
		Publisher: e.pub, Resources: e.state, Now: now, DrainTimeout: 2 * time.Second, Registerer: reg, Log: e.log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("console: %v", err)
		}
	})
	return c, "https://" + c.Addr()
}

// seed puts a request's abuse-monitoring record (prompt and output
// parts) on the abuse log of eu and, when flag is set, a safety signal
// that detection flags; it returns once the record can be looked up and
// the flag is set.
func (e *env) seed(t *testing.T, resource, requestID string, flag bool) {
	t.Helper()
	ctx := t.Context()
	meta := bus.Meta{RequestID: requestID, Resource: resource, HomeGeo: "eu", Deployment: "chat"}
	prompt, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": canary}}})
	now := time.Now().UTC()
	if err := e.bus.Publish(ctx, "eu", bus.StreamAbuseLog, meta, events.AbuseRecord{RequestID: requestID, Resource: resource,
		HomeGeo: "eu", ProcessingGeo: "eu", Deployment: "chat", Operation: events.OperationChatCompletions, Prompt: prompt,
		PromptFilterResults: json.RawMessage(`[{"prompt_index":0,"content_filter_results":{"violence":{"filtered":true,"severity":"high"}}}]`),
		CreatedAt:           now}); err != nil {
		t.Fatal(err)
	}
	if err := e.bus.Publish(ctx, "eu", bus.StreamAbuseLog, meta, events.AbuseRecord{RequestID: requestID, Resource: resource,
		HomeGeo: "eu", ProcessingGeo: "eu", Deployment: "chat", Operation: events.OperationChatCompletions,
		Output:               json.RawMessage(`{"choices":[{"message":{"role":"assistant","content":"I can't help with that."}}]}`),
		ContentFilterResults: json.RawMessage(`{"violence":{"filtered":false,"severity":"safe"}}`), CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if flag {
		sig := events.SafetySignal{RequestID: requestID, Resource: resource, Deployment: "chat", HomeGeo: "eu",
			Direction: events.DirectionPrompt, Categories: events.Categories{
				Hate: events.CategoryResult{Severity: events.SeveritySafe}, Sexual: events.CategoryResult{Severity: events.SeveritySafe},
				Violence: events.CategoryResult{Severity: events.SeverityHigh, Filtered: true}, SelfHarm: events.CategoryResult{Severity: events.SeveritySafe}},
			ContentHash: strings.Repeat("ab", 32), Filtered: true, At: now}
		if err := e.bus.Publish(ctx, "eu", bus.StreamSafetySignals, bus.Meta{Key: requestID}, sig); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "record indexed and flagged", func() bool {
		if flag {
			if _, ok, err := e.det.Flagged(ctx, "eu", requestID); err != nil || !ok {
				return false
			}
		}
		if resource == "optout" {
			return true
		}
		_, err := e.store.Lookup(ctx, "eu", resource, requestID)
		return err == nil
	})
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(25 * time.Millisecond) // polling with a deadline
	}
}

// browser is one person's TLS client on one console.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

func (e *env) browser(t *testing.T, base, name string) *browser {
	t.Helper()
	p, err := e.ca.Client(name)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := p.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, base: base, c: e.httpClient(&tls.Config{RootCAs: e.ca.Pool(), Certificates: []tls.Certificate{cert}})}
}

func (e *env) httpClient(cfg *tls.Config) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
}

type response struct {
	status int
	header http.Header
	body   string
}

func (b *browser) do(req *http.Request) response {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(body)}
}

func (b *browser) get(path string) response {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.base+path, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// post submits a form with the person's form token, as a browser would
// after loading the home page.
func (b *browser) post(path string, form url.Values) response {
	b.t.Helper()
	if b.csrf == "" {
		home := b.get("/")
		m := csrfField.FindStringSubmatch(home.body)
		if home.status != http.StatusOK || m == nil {
			b.t.Fatalf("home page = %d without a form token", home.status)
		}
		b.csrf = m[1]
	}
	form = cloneForm(form)
	if !form.Has("csrf") {
		form.Set("csrf", b.csrf)
	}
	return b.postRaw(path, form)
}

func (b *browser) postRaw(path string, form url.Values) response {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

func cloneForm(f url.Values) url.Values {
	out := url.Values{}
	for k, v := range f {
		out[k] = append([]string(nil), v...)
	}
	return out
}

func (b *browser) lookup(g, resource, id string) response {
	b.t.Helper()
	return b.post("/lookup", url.Values{"geo": {g}, "resource": {resource}, "request_id": {id}})
}

var requestRow = regexp.MustCompile(`id="request-(acc_[a-z0-9]+)"`)

// ask asks for access to g and returns the access request's ID.
func (b *browser) ask(g string, minutes int) string {
	b.t.Helper()
	r := b.post("/access", url.Values{"geo": {g}, "justification": {"case review of flagged violence"}, "minutes": {fmt.Sprint(minutes)}})
	if r.status != http.StatusOK || !strings.Contains(r.body, `id="notice"`) {
		b.t.Fatalf("asking for access = %d %s", r.status, r.body)
	}
	m := requestRow.FindStringSubmatch(r.body)
	if m == nil {
		b.t.Fatalf("no request listed after asking: %s", r.body)
	}
	return m[1]
}

func (b *browser) approve(g, id string, minutes int) response {
	b.t.Helper()
	return b.post("/access/"+g+"/"+id+"/approve", url.Values{"minutes": {fmt.Sprint(minutes)}})
}

// granted gives reviewer a grant for eu approved by jonas.manager.
func (e *env) granted(t *testing.T, base, reviewer string, minutes int) *browser {
	t.Helper()
	rev := e.browser(t, base, reviewer)
	id := rev.ask("eu", minutes)
	if r := e.browser(t, base, "jonas.manager").approve("eu", id, minutes); r.status != http.StatusOK || !strings.Contains(r.body, "Access approved") {
		t.Fatalf("approval = %d %s", r.status, r.body)
	}
	return rev
}

func hasID(body, id string) bool { return strings.Contains(body, `id="`+id+`"`) }

// auditHas reports whether eu's audit trail has an entry of actor and
// action about subject whose detail holds want.
func (e *env) auditHas(t *testing.T, actor string, action events.AuditAction, subject string, want map[string]string) bool {
	t.Helper()
	entries, err := e.audit.Recent(t.Context(), "eu", 1000)
	if err != nil {
		t.Fatal(err)
	}
next:
	for _, en := range entries {
		if en.Actor != actor || en.Action != action || en.Subject != subject {
			continue
		}
		for k, v := range want {
			if en.Detail[k] != v {
				continue next
			}
		}
		return true
	}
	return false
}

func TestConsole(t *testing.T) {
	e := newEnv(t)
	e.seed(t, "acme", "req-flagged-1", true)
	e.seed(t, "acme", "req-unflagged-1", false)
	notFound := string(e.console.notFound)

	// The stack's logs and metrics never carry a prompt.
	t.Cleanup(func() {
		for _, l := range e.logs.All() {
			line := l.Message
			for k, v := range l.ContextMap() {
				line += fmt.Sprintf(" %s=%v", k, v)
			}
			if strings.Contains(line, "CANARY-7f3a91") {
				t.Errorf("prompt text in a log line: %s", l.Message)
			}
		}
		mfs, err := e.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if strings.Contains(mf.String(), "CANARY-7f3a91") {
				t.Errorf("prompt text in metric %s", mf.GetName())
			}
		}
	})

	t.Run("NoClientCertificate", func(t *testing.T) {
		t.Parallel()
		c := e.httpClient(&tls.Config{RootCAs: e.ca.Pool()})
		resp, err := c.Get(e.base + "/")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("served without a client certificate: %d", resp.StatusCode)
		}
	})

	t.Run("CertificateFromAnotherCA", func(t *testing.T) {
		t.Parallel()
		other, err := pki.NewCA("Someone else's CA")
		if err != nil {
			t.Fatal(err)
		}
		p, err := other.Client("ana.reviewer")
		if err != nil {
			t.Fatal(err)
		}
		cert, err := p.TLSCertificate()
		if err != nil {
			t.Fatal(err)
		}
		c := e.httpClient(&tls.Config{RootCAs: e.ca.Pool(), Certificates: []tls.Certificate{cert}})
		resp, err := c.Get(e.base + "/")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("served a certificate of another CA: %d", resp.StatusCode)
		}
	})

	t.Run("NotInDirectory", func(t *testing.T) {
		t.Parallel()
		b := e.browser(t, e.base, "mallory")
		r := b.get("/")
		if r.status != http.StatusForbidden || !hasID(r.body, "not-authorised") || strings.Contains(r.body, `name="csrf"`) {
			t.Fatalf("stranger's home page = %d %s", r.status, r.body)
		}
		if r := b.postRaw("/lookup", url.Values{"geo": {"eu"}, "resource": {"acme"}, "request_id": {"req-flagged-1"}}); r.status != http.StatusForbidden {
			t.Fatalf("stranger's lookup = %d", r.status)
		}
	})

	t.Run("ReviewerWithoutGrant", func(t *testing.T) {
		t.Parallel()
		b := e.browser(t, e.base, "ben.reviewer")
		r := b.lookup("eu", "acme", "req-flagged-1")
		if r.status != http.StatusForbidden || !hasID(r.body, "no-grant") || strings.Contains(r.body, "CANARY") {
			t.Fatalf("lookup without a grant = %d %s", r.status, r.body)
		}
		if !e.auditHas(t, "ben.reviewer", events.AuditLookup, "req-flagged-1", map[string]string{"outcome": "no_grant"}) {
			t.Fatal("refused lookup not audited")
		}
		caseID, _, _ := e.det.Flagged(t.Context(), "eu", "req-flagged-1")
		if r := b.post("/cases/eu/"+caseID+"/decide", url.Values{"decision": {"suspend"}}); r.status != http.StatusForbidden || !hasID(r.body, "no-grant") {
			t.Fatalf("decision without a grant = %d %s", r.status, r.body)
		}
		if _, ok := e.state.Enforcement("acme"); ok {
			t.Fatal("enforcement published without a grant")
		}
	})

	t.Run("LapsedGrant", func(t *testing.T) {
		t.Parallel()
		var offset atomic.Int64
		clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
		_, base := e.newConsole(t, clock, e.store)
		rev := e.granted(t, base, "cleo.reviewer", 30)
		if r := rev.lookup("eu", "acme", "req-flagged-1"); r.status != http.StatusOK || !strings.Contains(r.body, "CANARY-7f3a91") {
			t.Fatalf("lookup with a live grant = %d %s", r.status, r.body)
		}
		offset.Store(int64(30*time.Minute + time.Second))
		r := rev.lookup("eu", "acme", "req-flagged-1")
		if r.status != http.StatusForbidden || !hasID(r.body, "no-grant") || strings.Contains(r.body, "CANARY") {
			t.Fatalf("lookup after the grant lapsed = %d %s", r.status, r.body)
		}
		if home := rev.get("/"); !strings.Contains(home.body, "lapsed at") {
			t.Fatalf("home page does not show the lapsed grant: %s", home.body)
		}
	})

	t.Run("ManagerApprovesOwnRequest", func(t *testing.T) {
		t.Parallel()
		maria := e.browser(t, e.base, "maria.manager")
		id := maria.ask("eu", 60)
		r := maria.approve("eu", id, 60)
		if r.status != http.StatusForbidden || !hasID(r.body, "refused") || !strings.Contains(r.body, "own request") {
			t.Fatalf("self-approval = %d %s", r.status, r.body)
		}
		if r := maria.post("/access/eu/"+id+"/deny", nil); r.status != http.StatusForbidden {
			t.Fatalf("self-denial = %d", r.status)
		}
		if r := maria.lookup("eu", "acme", "req-flagged-1"); r.status != http.StatusForbidden {
			t.Fatalf("lookup after a refused self-approval = %d", r.status)
		}
		if home := maria.get("/"); !strings.Contains(home.body, `id="request-status-`+id+`">pending<`) {
			t.Fatalf("request no longer pending: %s", home.body)
		}
	})

	t.Run("NonManagerApproves", func(t *testing.T) {
		t.Parallel()
		hal := e.browser(t, e.base, "hal.reviewer")
		id := hal.ask("eu", 60)
		eli := e.browser(t, e.base, "eli.reviewer")
		if r := eli.approve("eu", id, 60); r.status != http.StatusForbidden || !strings.Contains(r.body, "Only managers") {
			t.Fatalf("approval by a reviewer = %d %s", r.status, r.body)
		}
		if r := hal.lookup("eu", "acme", "req-flagged-1"); r.status != http.StatusForbidden {
			t.Fatalf("lookup after a reviewer's approval = %d", r.status)
		}
		// A manager's denial is audited and leaves no grant.
		if r := e.browser(t, e.base, "jonas.manager").post("/access/eu/"+id+"/deny", nil); r.status != http.StatusOK || !strings.Contains(r.body, "Access denied") {
			t.Fatalf("denial = %d %s", r.status, r.body)
		}
		if !e.auditHas(t, "jonas.manager", events.AuditAccessDenied, id, map[string]string{"requester": "hal.reviewer"}) {
			t.Fatal("denial not audited")
		}
		if r := hal.lookup("eu", "acme", "req-flagged-1"); r.status != http.StatusForbidden {
			t.Fatalf("lookup after a denial = %d", r.status)
		}
	})

	t.Run("USReviewerOpensEEARecord", func(t *testing.T) {
		t.Parallel()
		dan := e.browser(t, e.base, "dan.reviewer")
		r := dan.lookup("eu", "acme", "req-flagged-1")
		if r.status != http.StatusForbidden || !hasID(r.body, "no-grant") || !strings.Contains(r.body, "EEA") || strings.Contains(r.body, "CANARY") {
			t.Fatalf("US reviewer's lookup of an EEA record = %d %s", r.status, r.body)
		}
		if r := dan.post("/access", url.Values{"geo": {"eu"}, "justification": {"x"}, "minutes": {"60"}}); r.status != http.StatusForbidden || !hasID(r.body, "wrong-location") {
			t.Fatalf("US reviewer asking for eu = %d %s", r.status, r.body)
		}
	})

	t.Run("ApprovalForPersonOutsideRegion", func(t *testing.T) {
		t.Parallel()
		// A request of someone who has since moved to the US (the
		// directory changed after they asked).
		req := AccessRequest{ID: newID("acc"), Geo: "eu", Requester: "dan.reviewer", Justification: "asked from the EEA",
			Duration: time.Hour, Status: StatusPending, CreatedAt: time.Now().UTC()}
		if err := e.console.access.create(t.Context(), req); err != nil {
			t.Fatal(err)
		}
		r := e.browser(t, e.base, "jonas.manager").approve("eu", req.ID, 60)
		if r.status != http.StatusForbidden || !hasID(r.body, "refused") || !strings.Contains(r.body, "located in US") {
			t.Fatalf("approval for a person outside the region = %d %s", r.status, r.body)
		}
		if g, ok, err := e.console.access.grant(t.Context(), "eu", "dan.reviewer"); err != nil || ok {
			t.Fatalf("grant written: %+v %v", g, err)
		}
	})

	// Whoever can write to Redis cannot mint access: a grant or a flag
	// without the console's signature is ignored, and logged without
	// content.
	t.Run("ForgedGrant", func(t *testing.T) {
		t.Parallel()
		now := time.Now().UTC()
		forged, _ := json.Marshal(Grant{ID: "grant_forged", Geo: "eu", Person: "kim.reviewer", Request: "access_forged",
			ApprovedBy: "jonas.manager", Start: now.Add(-time.Minute), ExpiresAt: now.Add(time.Hour)})
		if err := e.redis["eu"].Set(t.Context(), grantKey("eu", "kim.reviewer"), forged, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		r := e.browser(t, e.base, "kim.reviewer").lookup("eu", "acme", "req-flagged-1")
		if r.status != http.StatusForbidden || !hasID(r.body, "no-grant") || strings.Contains(r.body, "CANARY") {
			t.Fatalf("lookup with a forged grant = %d %s", r.status, r.body)
		}
		if e.logs.FilterMessage("grant without a valid signature: ignored").Len() == 0 {
			t.Error("the forged grant was not logged")
		}
	})

	t.Run("ForgedFlag", func(t *testing.T) {
		t.Parallel()
		e.seed(t, "acme", "req-forged-flag-1", false)
		caseID, ok, err := e.det.Flagged(t.Context(), "eu", "req-flagged-1")
		if err != nil || !ok {
			t.Fatalf("no case for the flagged request: %v", err)
		}
		raw, err := e.redis["eu"].Get(t.Context(), "terroir:eu:review:flag:req-flagged-1").Result()
		if err != nil {
			t.Fatal(err)
		}
		// A bare case ID, and a genuine flag's value copied to another
		// request: neither flags it.
		for _, value := range []string{caseID, raw} {
			if err := e.redis["eu"].Set(t.Context(), "terroir:eu:review:flag:req-forged-flag-1", value, time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			if _, ok, err := e.det.Flagged(t.Context(), "eu", "req-forged-flag-1"); err != nil || ok {
				t.Fatalf("forged flag %q counts: %v %v", value, ok, err)
			}
			rev := e.granted(t, e.base, "lea.reviewer", 60)
			if r := rev.lookup("eu", "acme", "req-forged-flag-1"); r.status != http.StatusNotFound || strings.Contains(r.body, "CANARY") {
				t.Fatalf("lookup of a request with a forged flag = %d %s", r.status, r.body)
			}
		}
		if e.logs.FilterMessage("flag without a valid signature: ignored").Len() == 0 {
			t.Error("the forged flag was not logged")
		}
	})

	t.Run("UnflaggedID", func(t *testing.T) {
		t.Parallel()
		rev := e.granted(t, e.base, "eli.reviewer", 60)
		r := rev.lookup("eu", "acme", "req-unflagged-1")
		if r.status != http.StatusNotFound || r.body != notFound {
			t.Fatalf("unflagged ID = %d %s", r.status, r.body)
		}
		unknown := rev.lookup("eu", "acme", "req-never-seen")
		if unknown.status != r.status || unknown.body != r.body || unknown.header.Get("Content-Length") != r.header.Get("Content-Length") {
			t.Fatalf("unknown ID answered differently from an unflagged one: %d", unknown.status)
		}
		if !e.auditHas(t, "eli.reviewer", events.AuditLookup, "req-unflagged-1", map[string]string{"outcome": "not_flagged"}) {
			t.Fatal("lookup of an unflagged ID not audited")
		}
	})

	t.Run("RecordOlderThan30Days", func(t *testing.T) {
		t.Parallel()
		later := func() time.Time { return time.Now().Add(store.Retention + 24*time.Hour) }
		old, err := store.New(store.Config{Bus: e.bus, Redis: e.redis, State: e.state, Geos: []string{"eu", "us"}, Now: later, Log: e.log})
		if err != nil {
			t.Fatal(err)
		}
		_, base := e.newConsole(t, time.Now, old)
		rev := e.granted(t, base, "fay.reviewer", 60)
		r := rev.lookup("eu", "acme", "req-flagged-1")
		if r.status != http.StatusNotFound || r.body != notFound {
			t.Fatalf("record older than 30 days = %d %s", r.status, r.body)
		}
		// The same reviewer on today's console sees it.
		today := e.browser(t, e.base, "fay.reviewer")
		if r := today.lookup("eu", "acme", "req-flagged-1"); r.status != http.StatusOK {
			t.Fatalf("the same record today = %d", r.status)
		}
	})

	t.Run("WrongResource", func(t *testing.T) {
		t.Parallel()
		rev := e.granted(t, e.base, "gus.reviewer", 60)
		for _, res := range []string{"acme-happy", "optout", "nobody"} {
			r := rev.lookup("eu", res, "req-flagged-1")
			if r.status != http.StatusNotFound || r.body != notFound {
				t.Fatalf("lookup naming resource %s = %d %s", res, r.status, r.body)
			}
		}
	})

	t.Run("NoContentStored", func(t *testing.T) {
		t.Parallel()
		e.seed(t, "optout", "req-optout-1", true)
		rev := e.granted(t, e.base, "ivy.reviewer", 60)
		r := rev.lookup("eu", "optout", "req-optout-1")
		if r.status != http.StatusOK || !hasID(r.body, "no-content") || !strings.Contains(r.body, "no content stored for this resource") && !strings.Contains(r.body, "No content stored for this resource") {
			t.Fatalf("opted-out resource = %d %s", r.status, r.body)
		}
	})

	t.Run("FormTokens", func(t *testing.T) {
		t.Parallel()
		ana := e.browser(t, e.base, "ana.reviewer")
		form := url.Values{"geo": {"eu"}, "justification": {"x"}, "minutes": {"10"}}
		if r := ana.postRaw("/access", form); r.status != http.StatusForbidden || !hasID(r.body, "bad-token") {
			t.Fatalf("form without a token = %d %s", r.status, r.body)
		}
		ben := e.browser(t, e.base, "ben.reviewer")
		ben.get("/")
		benToken := csrfField.FindStringSubmatch(ben.get("/").body)[1]
		form.Set("csrf", benToken)
		if r := ana.postRaw("/access", form); r.status != http.StatusForbidden || !hasID(r.body, "bad-token") {
			t.Fatalf("form with another person's token = %d %s", r.status, r.body)
		}
		// A browser's cross-site POST is refused whatever the token.
		req, _ := http.NewRequest(http.MethodPost, e.base+"/access", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		if r := ana.do(req); r.status != http.StatusForbidden {
			t.Fatalf("cross-site POST = %d", r.status)
		}
	})

	t.Run("HappyPath", func(t *testing.T) {
		t.Parallel()
		e.seed(t, "acme-happy", "req-happy-1", true)
		ctx := t.Context()
		ana := e.browser(t, e.base, "ana.reviewer")
		jonas := e.browser(t, e.base, "jonas.manager")

		id := ana.ask("eu", 120)
		pending := jonas.get("/")
		if !hasID(pending.body, "approve-"+id) || !strings.Contains(pending.body, "case review of flagged violence") {
			t.Fatalf("manager's page does not offer the request: %s", pending.body)
		}
		if r := jonas.approve("eu", id, 200); r.status != http.StatusBadRequest {
			t.Fatalf("approving longer than asked = %d", r.status)
		}
		if r := jonas.approve("eu", id, 90); r.status != http.StatusOK {
			t.Fatalf("approval = %d %s", r.status, r.body)
		}
		home := ana.get("/")
		if !strings.Contains(home.body, `id="grant-eu"><span class="live">live until`) {
			t.Fatalf("reviewer's page does not show the grant: %s", home.body)
		}
		if r := jonas.approve("eu", id, 90); r.status != http.StatusConflict {
			t.Fatalf("second approval = %d", r.status)
		}

		caseID, ok, err := e.det.Flagged(ctx, "eu", "req-happy-1")
		if err != nil || !ok {
			t.Fatalf("not flagged: %v", err)
		}
		queue := ana.get("/cases/eu")
		if queue.status != http.StatusOK || !hasID(queue.body, "case-"+caseID) || !strings.Contains(queue.body, "req-happy-1") || strings.Contains(queue.body, "CANARY") {
			t.Fatalf("case queue = %d %s", queue.status, queue.body)
		}

		r := ana.lookup("eu", "acme-happy", "req-happy-1")
		if r.status != http.StatusOK {
			t.Fatalf("lookup = %d %s", r.status, r.body)
		}
		prompt := regexp.MustCompile(`(?s)<pre id="record-prompt">(.*?)</pre>`).FindStringSubmatch(r.body)
		if prompt == nil || !strings.Contains(prompt[1], "CANARY-7f3a91") {
			t.Fatalf("record page without the prompt: %s", r.body)
		}
		for _, want := range []string{`id="record-output">`, "can&#39;t help", `id="record-deployment">chat<`, `id="record-resource">acme-happy<`,
			`id="record-prompt-filter-results">`, `id="decision"`, `id="decide"`} {
			if !strings.Contains(r.body, want) {
				t.Errorf("record page lacks %s", want)
			}
		}
		for h, want := range map[string]string{"X-Frame-Options": "DENY", "Cache-Control": "no-store, max-age=0",
			"Content-Security-Policy": contentSecurityPolicy, "X-Content-Type-Options": "nosniff"} {
			if got := r.header.Get(h); got != want {
				t.Errorf("%s = %q, want %q", h, got, want)
			}
		}

		r = ana.post("/cases/eu/"+caseID+"/decide", url.Values{"decision": {"suspend"}})
		if r.status != http.StatusOK || !strings.Contains(r.body, `id="case-status">decided<`) {
			t.Fatalf("decision = %d %s", r.status, r.body)
		}
		enf, ok := e.state.Enforcement("acme-happy")
		if !ok || enf.Action != "suspend" || enf.Case != caseID || enf.Resource != "acme-happy" {
			t.Fatalf("enforcement = %+v, %v", enf, ok)
		}
		change, _ := e.state.Get(events.ControlEnforcement, "acme-happy", "acme-happy")
		if change.Actor != "review:ana.reviewer" {
			t.Fatalf("enforcement actor = %q", change.Actor)
		}
		if r := ana.post("/cases/eu/"+caseID+"/decide", url.Values{"decision": {"warn"}}); r.status != http.StatusConflict {
			t.Fatalf("second decision = %d", r.status)
		}

		// Every step is in the audit trail, which the manager reads.
		for _, step := range []struct {
			actor   string
			action  events.AuditAction
			subject string
			detail  map[string]string
		}{
			{"detection", events.AuditCaseOpened, caseID, map[string]string{"rule": "violence_high", "resource": "acme-happy"}},
			{"ana.reviewer", events.AuditAccessRequested, id, nil},
			{"jonas.manager", events.AuditAccessApproved, id, map[string]string{"requester": "ana.reviewer", "duration": "1h30m0s"}},
			{"ana.reviewer", events.AuditLookup, "req-happy-1", map[string]string{"outcome": "found", "case_id": caseID}},
			{"ana.reviewer", events.AuditView, "req-happy-1", map[string]string{"resource": "acme-happy"}},
			{"ana.reviewer", events.AuditDecision, caseID, map[string]string{"decision": "suspend"}},
		} {
			if !e.auditHas(t, step.actor, step.action, step.subject, step.detail) {
				t.Errorf("audit trail lacks %s %s %s", step.actor, step.action, step.subject)
			}
		}
		trail := jonas.get("/audit/eu")
		if trail.status != http.StatusOK || !hasID(trail.body, "audit-trail") || !strings.Contains(trail.body, "access_approved") || strings.Contains(trail.body, "CANARY") {
			t.Fatalf("audit page = %d %s", trail.status, trail.body)
		}
		if r := ana.get("/audit/eu"); r.status != http.StatusForbidden {
			t.Fatalf("reviewer's audit page = %d", r.status)
		}
		chain, err := audit.ReadChain(ctx, e.bus, "eu")
		if err != nil {
			t.Fatal(err)
		}
		if brk := audit.Verify(chain); brk != nil {
			t.Fatalf("audit chain broken: %+v", brk)
		}
		for _, en := range chain {
			if raw, _ := json.Marshal(en); strings.Contains(string(raw), "CANARY") {
				t.Fatalf("prompt text in audit entry %d", en.Seq)
			}
		}
	})
}

func TestDirectory(t *testing.T) {
	t.Parallel()
	d, err := ParseDirectory([]byte("people:\n  - name: ana.reviewer\n    role: reviewer\n    location: eea\n  - {name: jonas.manager, role: manager, location: EEA}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := d.Person("ana.reviewer"); !ok || p.Location != "EEA" || p.IsManager() {
		t.Fatalf("ana = %+v %v", p, ok)
	}
	if _, err := ParseDirectory([]byte("- name: ana.reviewer\n  role: reviewer\n  location: EEA\n")); err != nil {
		t.Fatalf("bare list: %v", err)
	}
	for name, doc := range map[string]string{
		"unknown role":  "people:\n  - {name: a, role: admin, location: EEA}\n",
		"no location":   "people:\n  - {name: a, role: reviewer}\n",
		"duplicate":     "people:\n  - {name: a, role: reviewer, location: EEA}\n  - {name: a, role: manager, location: EEA}\n",
		"no name":       "people:\n  - {role: reviewer, location: EEA}\n",
		"unknown field": "people:\n  - {name: a, role: reviewer, location: EEA, clearance: top}\n",
		"empty":         "people: []\n",
	} {
		if _, err := ParseDirectory([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
