// Package mgmt is the management API under /mgmt/: resources, API keys,
// deployments, the model catalog, deployment policies, content-filter
// policies, blocklists and the audit of changes. Operators call it with
// the operator token; an app's API key may read its own resource only.
//
// Every change is a control change on the compacted control topic (of
// the resource's home geography; deployment policies on every
// geography), and a handler answers only once this instance's view has
// applied it, so callers read their own writes. Each change is audited on
// the same topic: who, what, when, never a secret.
package mgmt

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/ingress/apierr"
)

// Publisher writes control changes with read-your-writes.
type Publisher interface {
	Publish(ctx context.Context, geo string, changes ...events.ControlChange) error
}

// Shredder deletes a resource's data keys (crypto-shredding) and lets a
// resource created anew under a deleted one's name have keys again.
type Shredder interface {
	Shred(ctx context.Context, geo, resource string) error
	Reopen(ctx context.Context, geo, resource string) error
}

// OwnedData deletes a resource's data kept outside the control plane.
type OwnedData interface {
	DeleteResource(ctx context.Context, res control.Resource) error
}

// Config is what the management API needs.
type Config struct {
	State     *control.State
	Publisher Publisher
	Keys      Shredder
	Catalog   *catalog.Catalog
	// Geos are the geographies this instance serves; a resource's
	// location must be one of them.
	Geos []string
	// OperatorToken authenticates operators; empty disables every
	// operator endpoint.
	OperatorToken string
	// PublicURL is the API's base URL as apps reach it, shown as a
	// resource's endpoint; "{name}" is replaced by the resource name.
	PublicURL string
	// MaxBody bounds request bodies, in bytes.
	MaxBody int64
	// Owned deletes what a resource owns outside the control plane (its
	// files) before the resource is deleted; nil when nothing is.
	Owned OwnedData
	Log   *zap.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// API serves /mgmt/.
type API struct {
	cfg      Config
	operator [32]byte
	// writes serialises this instance's check-then-publish sequences, so
	// two concurrent requests cannot both pass a check the other breaks.
	writes sync.Mutex
}

// New checks cfg and returns the API.
func New(cfg Config) (*API, error) {
	switch {
	case cfg.State == nil || cfg.Publisher == nil || cfg.Keys == nil || cfg.Catalog == nil || cfg.Log == nil:
		return nil, fmt.Errorf("mgmt: state, publisher, keys, catalog and logger are required")
	case len(cfg.Geos) == 0:
		return nil, fmt.Errorf("mgmt: no geographies")
	case cfg.MaxBody <= 0:
		return nil, fmt.Errorf("mgmt: MaxBody must be positive")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://127.0.0.1:8080/"
	}
	a := &API{cfg: cfg}
	a.cfg.Log = cfg.Log.Named("mgmt")
	if cfg.OperatorToken != "" {
		a.operator = sha256.Sum256([]byte(cfg.OperatorToken))
	}
	return a, nil
}

// caller is who made a request.
type caller struct {
	operator bool
	resource string // for app keys
	source   string
	request  string
}

func (c caller) actor() string {
	if c.operator {
		return "operator"
	}
	return "app:" + c.resource
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, c caller) error

// endpoint is one path of the management API and its handler per method.
type endpoint struct {
	pattern string
	methods map[string]handlerFunc
}

// endpoints is the route table: Handler serves it and Routes lists it.
func (a *API) endpoints() []endpoint {
	op := func(h handlerFunc) handlerFunc { return a.operatorOnly(h) }
	dep, fp, bl := a.deployments(), a.filterPolicies(), a.blocklists()
	return []endpoint{
		{"/mgmt/catalog", map[string]handlerFunc{"GET": op(a.getCatalog)}},
		{"/mgmt/audit", map[string]handlerFunc{"GET": op(a.getAudit)}},
		{"/mgmt/resources", map[string]handlerFunc{"GET": op(a.listResources)}},
		{"/mgmt/resources/{name}", map[string]handlerFunc{
			"GET": a.getResource, "PUT": op(a.putResource), "PATCH": op(a.patchResource), "DELETE": op(a.deleteResource)}},
		{"/mgmt/resources/{name}/listKeys", map[string]handlerFunc{"POST": op(a.listKeys)}},
		{"/mgmt/resources/{name}/regenerateKey", map[string]handlerFunc{"POST": op(a.regenerateKey)}},
		{"/mgmt/resources/{name}/deployments", map[string]handlerFunc{"GET": op(listChildren(a, dep))}},
		{"/mgmt/resources/{name}/deployments/{item}", map[string]handlerFunc{
			"GET": op(getChild(a, dep)), "PUT": op(a.putDeployment), "DELETE": op(deleteChild(a, dep))}},
		{"/mgmt/resources/{name}/contentFilterPolicies", map[string]handlerFunc{"GET": op(listChildren(a, fp))}},
		{"/mgmt/resources/{name}/contentFilterPolicies/{item}", map[string]handlerFunc{
			"GET": op(getChild(a, fp)), "PUT": op(a.putFilterPolicy), "DELETE": op(deleteChild(a, fp))}},
		{"/mgmt/resources/{name}/blocklists", map[string]handlerFunc{"GET": op(listChildren(a, bl))}},
		{"/mgmt/resources/{name}/blocklists/{item}", map[string]handlerFunc{
			"GET": op(getChild(a, bl)), "PUT": op(a.putBlocklist), "DELETE": op(deleteChild(a, bl))}},
		{"/mgmt/policies", map[string]handlerFunc{"GET": op(a.listPolicies)}},
		{"/mgmt/policies/{name}", map[string]handlerFunc{
			"GET": op(a.getPolicy), "PUT": op(a.putPolicy), "DELETE": op(a.deletePolicy)}},
	}
}

// Handler returns the routes of /mgmt/.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, e := range a.endpoints() {
		mux.Handle(e.pattern, a.dispatch(e.methods))
	}
	mux.Handle("/mgmt/", a.dispatch(nil))
	return mux
}

// Routes lists every endpoint of the management API as "METHOD
// pattern" ("GET /mgmt/resources/{name}"), sorted: the table Handler
// serves, for checks that must cover every route.
func Routes() []string {
	var a API // the handlers are built, never called
	var routes []string
	for _, e := range a.endpoints() {
		for m := range e.methods {
			routes = append(routes, m+" "+e.pattern)
		}
	}
	slices.Sort(routes)
	return routes
}

// dispatch authenticates the caller and runs the method's handler.
func (a *API) dispatch(methods map[string]handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := a.authenticate(r)
		if err == nil {
			h, ok := methods[r.Method]
			switch {
			case methods == nil:
				err = apierr.NotFound("NotFound", "no management endpoint at %s", r.URL.Path)
			case !ok:
				err = apierr.MethodNotAllowed(r.Method, r.URL.Path)
			default:
				err = h(w, r, c)
			}
		}
		if err != nil {
			if e := apierr.As(err); e.Status >= 500 {
				a.cfg.Log.Error("management request failed", zap.String("request_id", c.request),
					zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
			}
			apierr.Write(w, err)
		}
	})
}

// Credential returns the key or token a request presents: the api-key
// header (Azure) or a Bearer token (OpenAI).
func Credential(r *http.Request) string {
	if k := r.Header.Get("api-key"); k != "" {
		return k
	}
	if auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(auth)
	}
	return ""
}

func (a *API) authenticate(r *http.Request) (caller, error) {
	c := caller{source: r.RemoteAddr, request: r.Header.Get("x-request-id")}
	cred := Credential(r)
	if cred == "" {
		return c, apierr.Unauthorized("missing credentials: send the operator token or an API key as 'Authorization: Bearer <key>' or an 'api-key' header")
	}
	if a.cfg.OperatorToken != "" {
		sum := sha256.Sum256([]byte(cred))
		if subtle.ConstantTimeCompare(sum[:], a.operator[:]) == 1 {
			c.operator = true
			return c, nil
		}
	}
	if res, _, ok := a.cfg.State.Authenticate(cred); ok {
		c.resource = res
		return c, nil
	}
	return c, apierr.Unauthorized("the operator token or API key is not valid")
}

func (a *API) operatorOnly(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, c caller) error {
		if !c.operator {
			return apierr.Forbidden("OperatorTokenRequired", "this management endpoint needs the operator token; an API key may only read its own resource")
		}
		return h(w, r, c)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// list is the Azure shape of a collection.
type list[T any] struct {
	Value []T `json:"value"`
}

func listOf[T, S any](items []S, render func(S) T) list[T] {
	out := list[T]{Value: []T{}}
	for _, it := range items {
		out.Value = append(out.Value, render(it))
	}
	return out
}

var (
	// resourcePattern follows Azure account names.
	resourcePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,62}[A-Za-z0-9]$`)
	// itemPattern names deployments, policies and blocklists.
	itemPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
)

func checkName(param, kind, name string, pattern *regexp.Regexp) error {
	if !pattern.MatchString(name) {
		return apierr.Invalid(param, "%s name %q must be %s", kind, name, map[*regexp.Regexp]string{
			resourcePattern: "2-64 letters, digits or hyphens, starting and ending with a letter or digit",
			itemPattern:     "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
		}[pattern])
	}
	return nil
}

// bodyName checks that a name given in a body matches the path's.
func bodyName(given *string, path string) error {
	if given != nil && *given != path {
		return apierr.Invalid("name", "name %q in the body differs from %q in the path", *given, path)
	}
	return nil
}

// resourceOf returns the path's resource, which must exist.
func (a *API) resourceOf(r *http.Request) (control.Resource, error) {
	name := r.PathValue("name")
	res, ok := a.cfg.State.Resource(name)
	if !ok {
		return res, apierr.NotFound("ResourceNotFound", "resource %q not found", name)
	}
	return res, nil
}

func (a *API) change(c caller, kind events.ControlKind, resource, id string, spec any) (events.ControlChange, error) {
	ch := events.ControlChange{Kind: kind, ID: id, Resource: resource, Actor: c.actor(), At: a.cfg.Now().UTC()}
	if spec == nil {
		ch.Deleted = true
		return ch, nil
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return ch, fmt.Errorf("encoding %s %s: %w", kind, id, err)
	}
	ch.Spec = raw
	return ch, nil
}

// audit returns the audit change recording action on kind/object.
func (a *API) audit(c caller, action string, kind events.ControlKind, resource, object string, fields ...string) (events.ControlChange, error) {
	rec := control.AuditRecord{ID: newID(), Action: action, Kind: kind, Object: object, Resource: resource,
		Actor: c.actor(), Source: c.source, RequestID: c.request, At: a.cfg.Now().UTC(), Fields: fields}
	return a.change(c, events.ControlAudit, resource, rec.ID, rec)
}

// publish writes changes plus their audit record to geos and waits for
// this instance's view to apply them.
func (a *API) publish(ctx context.Context, geos []string, changes ...events.ControlChange) error {
	for _, g := range geos {
		if err := a.cfg.Publisher.Publish(ctx, g, changes...); err != nil {
			return err
		}
	}
	return nil
}

// commit publishes one object's change and its audit record on geos.
func (a *API) commit(ctx context.Context, c caller, geos []string, action string, kind events.ControlKind, resource, id string, spec any, fields ...string) error {
	ch, err := a.change(c, kind, resource, id, spec)
	if err != nil {
		return err
	}
	au, err := a.audit(c, action, kind, resource, id, fields...)
	if err != nil {
		return err
	}
	return a.publish(ctx, geos, ch, au)
}

// newID returns a sortable unique ID: time, then randomness.
func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%s", time.Now().UTC().UnixNano(), hex.EncodeToString(b))
}

func (a *API) getCatalog(w http.ResponseWriter, _ *http.Request, _ caller) error {
	type model struct {
		catalog.Model
		Object string `json:"object"`
	}
	return writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": listOf(a.cfg.Catalog.Models, func(m catalog.Model) model {
		return model{Model: m, Object: "model"}
	}).Value})
}

func (a *API) getAudit(w http.ResponseWriter, r *http.Request, _ caller) error {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		if _, err := fmt.Sscan(v, &limit); err != nil || limit < 1 || limit > 10000 {
			return apierr.Invalid("limit", "limit must be an integer from 1 to 10000")
		}
	}
	recs := a.cfg.State.Audit(r.URL.Query().Get("resource"), limit)
	if recs == nil {
		recs = []control.AuditRecord{}
	}
	return writeJSON(w, http.StatusOK, list[control.AuditRecord]{Value: recs})
}

// changedFields names the top-level JSON fields that differ between two
// specs, for the audit trail (names only, never values).
func changedFields(before, after any) []string {
	var b, a map[string]json.RawMessage
	rb, _ := json.Marshal(before)
	ra, _ := json.Marshal(after)
	_ = json.Unmarshal(rb, &b)
	_ = json.Unmarshal(ra, &a)
	var out []string
	for k, v := range a {
		if string(b[k]) != string(v) {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// readNamed checks the name in the path (at pathKey) and decodes the body
// into in; the name the body gives, if any (*given after decoding), must
// be the same.
func (a *API) readNamed(w http.ResponseWriter, r *http.Request, pathKey, kind string, pattern *regexp.Regexp, in any, given **string) (string, error) {
	name := r.PathValue(pathKey)
	if err := checkName("name", kind, name, pattern); err != nil {
		return "", err
	}
	if err := apierr.Decode(w, r, a.cfg.MaxBody, in); err != nil {
		return "", err
	}
	return name, bodyName(*given, name)
}
