// Package api is the app-facing REST API: the OpenAI paths (/v1/...,
// Bearer keys) and the Azure OpenAI paths (/openai/deployments/{d}/...
// with api-version, and /openai/v1/...; api-key header or Bearer). It
// authenticates the key, resolves the deployment, applies the rate limit
// and enforcement, chooses the processing geography, publishes the
// request to that geography's requests topic and writes the replies back
// as JSON or server-sent events.
//
// Replies arrive on the bus in sequence: seq 0 is content safety's
// verdict on the prompt (an inference.chunk whose body is the first SSE
// chunk, carrying prompt_filter_results, or a final inference.result when
// the prompt was blocked); then output chunks for streams; then a final
// inference.result with the response body or the error.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/admit"
	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/keys"
	"github.com/terroir-ai/terroir/pkg/route"
	"github.com/terroir-ai/terroir/services/ingress/apierr"
	"github.com/terroir-ai/terroir/services/ingress/batches"
	"github.com/terroir-ai/terroir/services/ingress/files"
	"github.com/terroir-ai/terroir/services/ingress/mgmt"
)

// APIVersions are the Azure api-version values the deployment paths
// accept.
var APIVersions = []string{
	"2023-05-15", "2024-02-01", "2024-06-01", "2024-10-21",
	"2024-08-01-preview", "2024-10-01-preview", "2024-12-01-preview",
	"2025-01-01-preview", "2025-02-01-preview", "2025-03-01-preview", "2025-04-01-preview",
}

// Requester sends a request on the bus and returns its replies.
type Requester interface {
	Request(ctx context.Context, geo, stream string, meta bus.Meta, ev events.Event) (*bus.ReplyStream, error)
}

// Config is what the API needs.
type Config struct {
	State    *control.State
	Catalog  *catalog.Catalog
	Capacity *route.Capacity
	// Requesters has one requester per geography served.
	Requesters map[string]Requester
	// MaxBody bounds request bodies, in bytes.
	MaxBody int64
	// Timeout bounds one request from publishing to the last reply.
	Timeout time.Duration
	// WriteTimeout bounds each write to the client: a whole JSON answer,
	// or one event of a stream with its flush. It replaces the server's
	// deadline for the whole response, which would cut off a long
	// healthy stream or an answer the model took long to give.
	WriteTimeout time.Duration
	// Files serves the Files API; nil answers its paths 404.
	Files *files.Service
	// Batches serves the Batch API; nil answers its paths 404.
	Batches *batches.Service
	Log     *zap.Logger
	Now     func() time.Time
}

// API serves the app paths.
type API struct {
	cfg    Config
	geos   []string
	admit  *admit.Admitter
	limits limiter
}

// New checks cfg and returns the API.
func New(cfg Config) (*API, error) {
	if cfg.State == nil || cfg.Catalog == nil || cfg.Capacity == nil || len(cfg.Requesters) == 0 || cfg.Log == nil || cfg.MaxBody <= 0 || cfg.Timeout <= 0 || cfg.WriteTimeout <= 0 {
		return nil, errors.New("api: state, catalog, capacity, requesters, logger, body limit, timeout and write timeout are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &API{cfg: cfg}
	a.cfg.Log = cfg.Log.Named("api")
	for g := range cfg.Requesters {
		a.geos = append(a.geos, g)
	}
	slices.Sort(a.geos)
	a.admit = &admit.Admitter{State: cfg.State, Catalog: cfg.Catalog, Capacity: cfg.Capacity, Geos: a.geos}
	return a, nil
}

// endpoints is the route table: Handler serves it and Routes lists it.
func (a *API) endpoints() map[string]http.Handler {
	routes := map[string]http.Handler{
		"GET /v1/models":        http.HandlerFunc(a.models),
		"GET /openai/v1/models": http.HandlerFunc(a.models),
	}
	for _, op := range []events.Operation{events.OperationChatCompletions, events.OperationCompletions, events.OperationEmbeddings} {
		path := "/" + strings.ReplaceAll(string(op), ".", "/")
		routes["POST /v1"+path] = a.serve(op, events.APIFlavorOpenAI, false)
		routes["POST /openai/v1"+path] = a.serve(op, events.APIFlavorAzure, false)
		routes["POST /openai/deployments/{deployment}"+path] = a.serve(op, events.APIFlavorAzure, true)
	}
	// The Files API under /v1, /openai (with api-version; Azure's
	// answers) and /openai/v1 (Azure's v1 API, OpenAI's answers).
	for route, h := range a.cfg.Files.Endpoints() {
		method, path, _ := strings.Cut(route, " ")
		on := a.cfg.Files != nil
		routes[method+" /v1"+path] = a.family(h, false, on)
		routes[method+" /openai"+path] = a.family(h, true, on)
		routes[method+" /openai/v1"+path] = a.family(h, false, on)
	}
	// The Batch API likewise, and under an Azure deployment's path too:
	// the Node SDK's AzureOpenAI client with a deployment option sends
	// /batches there (the deployment named is not used: a batch's lines
	// name theirs).
	for route, h := range a.cfg.Batches.Endpoints() {
		method, path, _ := strings.Cut(route, " ")
		on := a.cfg.Batches != nil
		routes[method+" /v1"+path] = a.family(h, false, on)
		routes[method+" /openai"+path] = a.family(h, true, on)
		routes[method+" /openai/v1"+path] = a.family(h, false, on)
		routes[method+" /openai/deployments/{deployment}"+path] = a.family(h, true, on)
	}
	return routes
}

// familyHandler is an endpoint of an API family package (files.Handler,
// batches.Handler).
type familyHandler = func(w http.ResponseWriter, r *http.Request, res control.Resource, azure bool) error

// family serves an endpoint of an API family package: it authenticates
// the caller, checks api-version where the path needs one, bounds each
// write like the model answers, and writes the error the handler returns;
// without on (the family is not served) it answers 404.
func (a *API) family(h familyHandler, azure, on bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w = &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: a.cfg.WriteTimeout}
		err := func() error {
			res, err := a.caller(r)
			if err != nil {
				return err
			}
			if azure {
				if err := checkAPIVersion(r); err != nil {
					return err
				}
			}
			if !on {
				return apierr.NotFound("not_found", "no endpoint at %s %s", r.Method, r.URL.Path)
			}
			return h(w, r, res, azure)
		}()
		if err != nil {
			if apierr.As(err).Status == http.StatusInternalServerError {
				a.cfg.Log.Error("request failed", zap.String("request_id", r.Header.Get("x-request-id")), zap.String("path", r.URL.Path), zap.Error(err))
			}
			apierr.Write(w, err)
		}
	})
}

// checkAPIVersion refuses an /openai/ request without a supported
// api-version.
func checkAPIVersion(r *http.Request) error {
	v := r.URL.Query().Get("api-version")
	if slices.Contains(APIVersions, v) {
		return nil
	}
	what := "is missing"
	if v != "" {
		what = fmt.Sprintf("%q is not supported", v)
	}
	return apierr.Invalid("api-version", "the api-version query parameter %s; supported: %s", what, strings.Join(APIVersions, ", "))
}

// Handler returns the routes: mount it at "/v1/" and "/openai/".
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	for pattern, h := range a.endpoints() {
		mux.Handle(pattern, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apierr.Write(w, apierr.NotFound("not_found", "no endpoint at %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// Routes lists every app endpoint as "METHOD pattern"
// ("POST /v1/chat/completions"), sorted: the table Handler serves, for
// checks that must cover every route.
func Routes() []string {
	var a API // the handlers are built, never called
	return slices.Sorted(maps.Keys(a.endpoints()))
}

// caller returns the resource whose key the request presents.
func (a *API) caller(r *http.Request) (control.Resource, error) {
	name, _, ok := a.cfg.State.Authenticate(mgmt.Credential(r))
	if !ok {
		return control.Resource{}, apierr.Unauthorized("Incorrect API key provided. Send a key of your resource as 'api-key: <key>' or 'Authorization: Bearer <key>'.")
	}
	res, ok := a.cfg.State.Resource(name)
	if !ok {
		return res, apierr.Unauthorized("the API key's resource no longer exists")
	}
	if e, ok := a.cfg.State.Enforcement(res.Name); ok && e.Action == "suspend" {
		return res, apierr.Forbidden("ResourceSuspended", "resource %q is suspended after abuse review; contact the operator", res.Name)
	}
	return res, nil
}

func (a *API) models(w http.ResponseWriter, r *http.Request) {
	res, err := a.caller(r)
	if err != nil {
		apierr.Write(w, err)
		return
	}
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	out := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, d := range a.cfg.State.Deployments(res.Name) {
		owner := "terroir"
		if m, ok := a.cfg.Catalog.Model(d.Model); ok {
			owner = strings.ToLower(m.Publisher)
		}
		out.Data = append(out.Data, model{ID: d.Name, Object: "model", Created: d.CreatedAt.Unix(), OwnedBy: owner})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// deadlineWriter puts a deadline on every write to the client, so a
// client that stops reading is cut off after timeout without a stall
// in one write, while the time before the first write (the model
// thinking) and the length of a stream are bounded by the request
// timeout only. A failed write also ends the request's context.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.ResponseWriter.Write(b)
}

// FlushError is what http.ResponseController.Flush calls.
func (w *deadlineWriter) FlushError() error {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.rc.Flush()
}

// Flush makes the writer an http.Flusher.
func (w *deadlineWriter) Flush() { _ = w.FlushError() }

// Unwrap gives http.ResponseController the underlying writer.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (a *API) serve(op events.Operation, flavor events.APIFlavor, deploymentPath bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w = &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: a.cfg.WriteTimeout}
		if err := a.handle(w, r, op, flavor, deploymentPath); err != nil {
			apierr.Write(w, err)
		}
	})
}

func (a *API) handle(w http.ResponseWriter, r *http.Request, op events.Operation, flavor events.APIFlavor, deploymentPath bool) error {
	id := r.Header.Get("x-request-id")
	res, err := a.caller(r)
	if err != nil {
		return err
	}
	if deploymentPath {
		if err := checkAPIVersion(r); err != nil {
			return err
		}
	}
	// Read once, decoded once (by admit.Parse, strictly, into its request type).
	raw, err := apierr.ReadBody(w, r, a.cfg.MaxBody)
	if err != nil {
		return err
	}
	p, err := admit.Parse(op, raw)
	if err != nil {
		return err
	}
	name := p.Model
	if deploymentPath {
		name = r.PathValue("deployment")
	}
	rv, err := a.admit.Resolve(res, op, name, p, false)
	if err != nil {
		return err
	}
	dep := rv.Deployment
	enf, _ := a.cfg.State.Enforcement(res.Name)
	adm := a.limits.admit(res.Name+"/"+dep.Name, dep.Capacity, enf.Action == "throttle", p.Estimate, a.cfg.Now())
	w.Header().Set("x-ratelimit-remaining-requests", strconv.FormatInt(adm.requestsRemaining, 10))
	w.Header().Set("x-ratelimit-remaining-tokens", strconv.FormatInt(adm.tokensRemaining, 10))
	if adm.neverFits {
		return &apierr.Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "429",
			Message: fmt.Sprintf("This request may use up to %d tokens (its prompt, and max_tokens for every choice), more than deployment %q's whole rate limit of %d tokens per minute, so it can never be admitted: lower max_tokens or n, or raise the deployment's capacity.",
				p.Estimate, dep.Name, adm.tokensPerMinute)}
	}
	if !adm.ok {
		secs := int(adm.retryAfter/time.Second) + 1
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		w.Header().Set("retry-after-ms", strconv.FormatInt(adm.retryAfter.Milliseconds()+1, 10))
		return &apierr.Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "429",
			Message: fmt.Sprintf("Requests to deployment %q exceed its rate limit (capacity %d thousand tokens per minute). Retry after %d seconds.", dep.Name, dep.Capacity, secs)}
	}
	geo, err := a.admit.Route(res, rv)
	if err != nil {
		a.cfg.Log.Warn("no processing geography", zap.String("request_id", id), zap.String("resource", res.Name), zap.String("deployment", dep.Name), zap.Error(errors.Unwrap(err)))
		return err
	}
	ev := events.InferenceRequest{RequestID: id, Resource: res.Name, HomeGeo: res.Location, ProcessingGeo: geo, Deployment: dep.Name,
		SKU: dep.SKU, Model: dep.Model, Operation: op, Stream: p.Stream, APIFlavor: flavor, Body: raw, CreatedAt: a.cfg.Now().UTC()}
	meta := bus.Meta{RequestID: id, Resource: res.Name, HomeGeo: res.Location, Deployment: dep.Name}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()
	rs, err := a.cfg.Requesters[geo].Request(ctx, geo, bus.StreamRequests, meta, ev)
	switch {
	case errors.Is(err, keys.ErrShredded):
		// Deleted while this request was on its way: nothing was sealed.
		return apierr.Gone("ResourceDeleted", "resource %q was deleted", res.Name)
	case errors.Is(err, keys.ErrResourceGone):
		return apierr.NotFound("ResourceNotFound", "resource %q not found", res.Name)
	case err != nil:
		return fmt.Errorf("publishing request %s: %w", id, err)
	}
	defer rs.Close()
	return a.respond(ctx, w, r, rs, op, p)
}
