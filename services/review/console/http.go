package console

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Security headers of every response. The pages use no script, no inline
// style and nothing from another origin.
const contentSecurityPolicy = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'"

// maxForm bounds a POSTed form, in bytes.
const maxForm = 64 << 10

type pageTemplate = template.Template

// page is what every page template gets.
type page struct {
	Title  string
	Person Person
	// CSRF is the form token of the person's certificate.
	CSRF string
	Data any
}

var pageNames = []string{"home", "cases", "case", "record", "audit", "message", "notfound"}

func loadPages() (map[string]*pageTemplate, []byte, error) {
	funcs := template.FuncMap{
		"when": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05 UTC")
		},
		"minutes": func(d time.Duration) int { return int(d / time.Minute) },
		"join":    strings.Join,
		"details": func(m map[string]string) []string {
			var out []string
			for _, k := range slices.Sorted(maps.Keys(m)) {
				out = append(out, k+"="+m[k])
			}
			return out
		},
		"short": func(s string) string {
			if len(s) > 12 {
				return s[:12]
			}
			return s
		},
	}
	pages := map[string]*pageTemplate{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, nil, fmt.Errorf("console: parsing page %s: %w", name, err)
		}
		pages[name] = t
	}
	// The not-found page is rendered once: every request that ends in it
	// gets the same bytes, whatever it asked for.
	var buf bytes.Buffer
	if err := pages["notfound"].ExecuteTemplate(&buf, "layout", page{Title: "Not found"}); err != nil {
		return nil, nil, fmt.Errorf("console: rendering the not-found page: %w", err)
	}
	return pages, buf.Bytes(), nil
}

// caller is the person behind a request.
type caller struct {
	Person
	csrf string
}

// Handler serves the console's pages. It expects requests that arrived
// over TLS with a verified client certificate, and refuses any other.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /static/console.css", c.serveCSS)
	mux.HandleFunc("GET /{$}", c.authed(c.home))
	mux.HandleFunc("POST /access", c.authed(c.requestAccess))
	mux.HandleFunc("POST /access/{geo}/{id}/approve", c.authed(c.inGeo(c.approve)))
	mux.HandleFunc("POST /access/{geo}/{id}/deny", c.authed(c.inGeo(c.deny)))
	mux.HandleFunc("GET /cases/{geo}", c.authed(c.inGeo(c.caseQueue)))
	mux.HandleFunc("GET /cases/{geo}/{id}", c.authed(c.inGeo(c.caseDetail)))
	mux.HandleFunc("POST /cases/{geo}/{id}/decide", c.authed(c.inGeo(c.decide)))
	mux.HandleFunc("POST /lookup", c.authed(c.lookup))
	mux.HandleFunc("GET /audit/{geo}", c.authed(c.inGeo(c.auditTrail)))
	mux.HandleFunc("/", c.authed(func(w http.ResponseWriter, r *http.Request, _ caller) { c.writeNotFound(w) }))
	// Browsers refuse cross-origin POSTs here before the token is even
	// looked at.
	return c.secure(http.NewCrossOriginProtection().Handler(mux))
}

// secure sets the security headers of every response and logs one line
// per request: route, status, person and duration, never a form value.
func (c *Console) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store, max-age=0")
		h.Set("Pragma", "no-cache")
		h.Set("Strict-Transport-Security", "max-age=31536000")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), clipboard-read=()")
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		c.metrics.requests.WithLabelValues(route, fmt.Sprint(rec.status)).Inc()
		fields := []zap.Field{zap.String("method", r.Method), zap.String("route", route), zap.Int("status", rec.status),
			zap.Duration("duration", time.Since(start))}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			fields = append(fields, zap.String("person", r.TLS.PeerCertificates[0].Subject.CommonName))
		}
		c.log.Info("console request", fields...)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// authed resolves the person of the request's verified client certificate
// and, on POST, checks the form token bound to that certificate.
func (c *Console) authed(h func(http.ResponseWriter, *http.Request, caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.PeerCertificates) == 0 {
			c.message(w, http.StatusForbidden, caller{}, "not-authorised", "Not authorised",
				"The review console is open only to secure workstations with a review certificate.")
			return
		}
		cert := r.TLS.PeerCertificates[0]
		p, ok := c.cfg.People.Person(cert.Subject.CommonName)
		if !ok {
			c.log.Warn("certificate of someone not in the people directory", zap.String("person", cert.Subject.CommonName),
				zap.String("serial", cert.SerialNumber.Text(16)))
			c.message(w, http.StatusForbidden, caller{}, "not-authorised", "Not authorised",
				"Your certificate is valid, but you are not in the review team's people directory.")
			return
		}
		who := caller{Person: p, csrf: c.csrfToken(p, cert)}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxForm)
			if err := r.ParseForm(); err != nil {
				c.message(w, http.StatusBadRequest, who, "bad-request", "Bad request", "The form could not be read.")
				return
			}
			if !hmac.Equal([]byte(r.PostForm.Get("csrf")), []byte(who.csrf)) {
				c.log.Warn("form token refused", zap.String("person", p.Name), zap.String("route", r.Pattern))
				c.message(w, http.StatusForbidden, who, "bad-token", "Form expired",
					"This form was not issued to you by this console. Go back, reload the page and try again.")
				return
			}
		}
		h(w, r, who)
	}
}

// csrfToken binds forms to the person and the very certificate they
// present: a page fetched with one certificate cannot be replayed with
// another, and another site cannot forge a form (the browser would send
// the certificate along, but the site cannot know the token).
func (c *Console) csrfToken(p Person, cert *x509.Certificate) string {
	m := hmac.New(sha256.New, c.csrfKey)
	m.Write([]byte("terroir-review-form\x00" + p.Name + "\x00"))
	fp := sha256.Sum256(cert.Raw)
	m.Write(fp[:])
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (c *Console) serveCSS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	_, _ = w.Write(c.css)
}

func (c *Console) render(w http.ResponseWriter, status int, name string, p page) {
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		c.log.Error("page not rendered", zap.String("page", name), zap.Error(err))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// messageData is a page that says one thing; ID is its stable element ID.
type messageData struct {
	ID, Heading, Text string
}

func (c *Console) message(w http.ResponseWriter, status int, who caller, id, heading, text string) {
	c.render(w, status, "message", page{Title: heading, Person: who.Person, CSRF: who.csrf,
		Data: messageData{ID: id, Heading: heading, Text: text}})
}

// unavailable answers when a dependency failed; the detail goes to the
// log, not to the page.
func (c *Console) unavailable(w http.ResponseWriter, who caller, what string, err error, fields ...zap.Field) {
	c.log.Error(what, append(fields, zap.String("person", who.Name), zap.Error(err))...)
	c.message(w, http.StatusServiceUnavailable, who, "unavailable", "Unavailable",
		"The console cannot do this right now, and nothing was done. Try again shortly.")
}

func (c *Console) writeNotFound(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusNotFound)
	_, _ = w.Write(c.notFound)
}

func seeOther(w http.ResponseWriter, r *http.Request, to string) {
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// pretty indents a JSON value for display; html/template escapes it.
func pretty(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return string(raw)
	}
	return buf.String()
}

type metrics struct {
	requests, lookups, decisions, access *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "terroir_review_console_requests_total",
			Help: "Review console requests by route and status."}, []string{"route", "code"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "terroir_review_lookups_total",
			Help: "Point-wise record lookups by geography and outcome."}, []string{"geo", "outcome"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "terroir_review_decisions_total",
			Help: "Case decisions by geography and decision."}, []string{"geo", "decision"}),
		access: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "terroir_review_access_total",
			Help: "Just-in-time access requests, approvals, denials and refused answers by geography."}, []string{"geo", "event"}),
	}
	if reg != nil {
		for _, cv := range []prometheus.Collector{m.requests, m.lookups, m.decisions, m.access} {
			if err := reg.Register(cv); err != nil {
				return nil, fmt.Errorf("console: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}

// inGeo answers a page under /…/{geo}/ with the not-found page unless the
// console serves that geography.
func (c *Console) inGeo(h func(http.ResponseWriter, *http.Request, caller)) func(http.ResponseWriter, *http.Request, caller) {
	return func(w http.ResponseWriter, r *http.Request, who caller) {
		if !c.served(r.PathValue("geo")) {
			c.writeNotFound(w)
			return
		}
		h(w, r, who)
	}
}
