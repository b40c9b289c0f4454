// Package console is the review console: server-rendered pages, served
// over HTTPS to secure workstations only, where people of the review team
// ask for and approve just-in-time access, see the queue of cases that
// detection opened (metadata only), look up one flagged request ID at a
// time, decide cases, and read the audit trail.
//
// The rules it keeps (promise 6):
//
//   - Every connection presents a client certificate issued by the review
//     CA; its Subject CommonName names a person of the people directory,
//     with a role (reviewer or manager) and a location. Anyone else gets
//     403.
//   - A geography's records are opened only by people located in its
//     review region (geo.Geo.ReviewRegion), holding a live grant for it.
//   - A grant is asked for with a justification and a duration (at most
//     MaxGrant) and approved or denied by a different person who is a
//     manager; it lapses when its time is up. Requests and grants are
//     kept in the Redis of the geography concerned.
//   - A lookup names one geography, resource and request ID. It finds
//     only request IDs that detection flagged, of that resource, at most
//     30 days old; everything else gets the same "not found" page, byte
//     for byte. There is no list or search of content.
//   - Decisions on a case (no action, warn, throttle, suspend) need a live
//     grant; throttle and suspend are published as enforcement on the
//     control topic of the resource's home geography.
//   - Every request for access, approval, denial, lookup (with its
//     outcome), view and decision is appended to the geography's audit
//     trail before it takes effect; when the audit trail cannot be
//     written, nothing happens.
//   - Every POST carries a token bound to the person's certificate;
//     pages forbid framing, load nothing but the console's own stylesheet,
//     and are never cached. Logs and metrics carry IDs, never content.
package console

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"embed"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/geo"
	"github.com/terroir-ai/terroir/services/review/detect"
	"github.com/terroir-ai/terroir/services/review/signing"
	"github.com/terroir-ai/terroir/services/review/store"
)

// DefaultAddr is where the console listens unless told otherwise.
const DefaultAddr = "127.0.0.1:8443"

// Records looks up one abuse-monitoring record (*store.Store).
type Records interface {
	Lookup(ctx context.Context, geo, resource, requestID string) (store.Record, error)
}

// Cases are the cases detection opened (*detect.Detector).
type Cases interface {
	Cases(ctx context.Context, geo string, limit int) ([]detect.Case, error)
	Case(ctx context.Context, geo, id string) (detect.Case, error)
	Flagged(ctx context.Context, geo, requestID string) (caseID string, ok bool, err error)
	Decide(ctx context.Context, geo, id, decision, by string) (detect.Case, error)
}

// Auditor is the audit trail of each geography (*audit.Log).
type Auditor interface {
	Append(ctx context.Context, geo string, e events.AuditEntry) (events.AuditEntry, error)
	Recent(ctx context.Context, geo string, n int) ([]events.AuditEntry, error)
}

// Publisher writes control changes with read-your-writes
// (*control.Publisher).
type Publisher interface {
	Publish(ctx context.Context, geo string, changes ...events.ControlChange) error
}

// Resources finds a resource's home geography (*control.State).
type Resources interface {
	Resource(name string) (control.Resource, bool)
}

// Config is what the console needs.
type Config struct {
	// Addr is the listen address; default DefaultAddr.
	Addr string
	// Certificate is the console's server certificate.
	Certificate tls.Certificate
	// ClientCAs are the review CA(s) whose client certificates are
	// accepted; every other connection is refused in the handshake.
	ClientCAs *x509.CertPool
	// People is the people directory.
	People *Directory
	// Geos are the geographies served here; Redis has a client for each.
	Geos  []string
	Redis map[string]*redis.Client

	Records   Records
	Cases     Cases
	Audit     Auditor
	Publisher Publisher
	Resources Resources
	// Signer signs grants and verifies them and detection's flags.
	Signer *signing.Signer

	// CSRFKey keys the tokens that bind forms to a person's certificate;
	// at least 32 bytes. Consoles behind one address share it. Default: a
	// random key per process (tokens then last as long as the process).
	CSRFKey []byte
	// Now is the clock; default time.Now.
	Now func() time.Time
	// DrainTimeout bounds how long Run waits for requests in flight on
	// shutdown; default 10 s.
	DrainTimeout time.Duration
	// Registerer, when set, receives the console's metrics.
	Registerer prometheus.Registerer
	Log        *zap.Logger
}

//go:embed templates/*.html static/*
var assets embed.FS

// Console is the listening review console.
type Console struct {
	cfg      Config
	log      *zap.Logger
	access   *access
	csrfKey  []byte
	pages    map[string]*pageTemplate
	notFound []byte
	css      []byte
	metrics  *metrics
	ln       net.Listener
	srv      *http.Server
}

// New checks cfg and binds the listen address; Run serves on it.
func New(cfg Config) (*Console, error) {
	var errs []error
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if len(cfg.Certificate.Certificate) == 0 {
		errs = append(errs, errors.New("console: a server certificate is required"))
	}
	if cfg.ClientCAs == nil {
		errs = append(errs, errors.New("console: the review CA (client CAs) is required"))
	}
	if cfg.People == nil {
		errs = append(errs, errors.New("console: a people directory is required"))
	}
	if len(cfg.Geos) == 0 {
		errs = append(errs, errors.New("console: no geography configured"))
	}
	for _, g := range cfg.Geos {
		if _, ok := geo.Lookup(g); !ok {
			errs = append(errs, fmt.Errorf("console: unknown geography %q", g))
		}
		if cfg.Redis[g] == nil {
			errs = append(errs, fmt.Errorf("console: no Redis for geography %q", g))
		}
	}
	if cfg.Records == nil || cfg.Cases == nil || cfg.Audit == nil || cfg.Publisher == nil || cfg.Resources == nil || cfg.Signer == nil {
		errs = append(errs, errors.New("console: records, cases, audit, publisher, resources and signer are all required"))
	}
	if cfg.CSRFKey != nil && len(cfg.CSRFKey) < 32 {
		errs = append(errs, errors.New("console: the CSRF key must be at least 32 bytes"))
	}
	if cfg.Log == nil {
		errs = append(errs, errors.New("console: a logger is required"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	c := &Console{cfg: cfg, log: cfg.Log.Named("console"), csrfKey: cfg.CSRFKey}
	c.access = &access{redis: cfg.Redis, signer: cfg.Signer, log: c.log}
	if c.csrfKey == nil {
		c.csrfKey = make([]byte, 32)
		_, _ = rand.Read(c.csrfKey)
	}
	var err error
	if c.pages, c.notFound, err = loadPages(); err != nil {
		return nil, err
	}
	if c.css, err = assets.ReadFile("static/console.css"); err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	if c.metrics, err = newMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	tlsConfig := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cfg.Certificate},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    cfg.ClientCAs,
		NextProtos:   []string{"h2", "http/1.1"},
	}
	c.srv = &http.Server{
		Handler:           c.Handler(),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// Handshake failures (no or foreign certificate) are routine
		// refusals: the server's own lines are logged at debug level.
		ErrorLog: mustStdLog(c.log),
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("console: listening on %s: %w", cfg.Addr, err)
	}
	c.ln = ln
	return c, nil
}

// Addr is the address the console listens on.
func (c *Console) Addr() string { return c.ln.Addr().String() }

// Run serves until ctx ends, then stops taking requests and waits for
// those in flight, at most the drain timeout.
func (c *Console) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- c.srv.ServeTLS(c.ln, "", "") }()
	c.log.Info("review console listening", zap.String("addr", c.Addr()))
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serving the review console: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.DrainTimeout)
	defer cancel()
	err := c.srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		c.log.Warn("console requests still in flight after the drain timeout; closing")
		_ = c.srv.Close()
		return nil
	}
	if serr := <-errc; err == nil && !errors.Is(serr, http.ErrServerClosed) {
		err = serr
	}
	return err
}

// Close stops the console at once; it may be called more than once.
func (c *Console) Close() error {
	err := c.srv.Close()
	_ = c.ln.Close()
	return err
}

func mustStdLog(l *zap.Logger) *log.Logger {
	std, err := zap.NewStdLogAt(l, zap.DebugLevel)
	if err != nil {
		return zap.NewStdLog(l)
	}
	return std
}

func (c *Console) now() time.Time { return c.cfg.Now().UTC() }

func (c *Console) served(g string) bool { return slices.Contains(c.cfg.Geos, g) }

// region is the review region of a served geography.
func region(g string) string {
	gg, _ := geo.Lookup(g)
	return gg.ReviewRegion
}

// locatedFor reports whether p may open g's records at all.
func locatedFor(p Person, g string) bool {
	r := region(g)
	return r != "" && p.Location == r
}

// AuditCaseOpened returns the OnOpen hook of detect: each case a rule
// opens is appended to its geography's audit trail with actor
// "detection" and action case_opened.
func AuditCaseOpened(a Auditor, logger *zap.Logger) func(context.Context, detect.Case) {
	lg := logger.Named("console")
	return func(ctx context.Context, cs detect.Case) {
		_, err := a.Append(ctx, cs.Geo, events.AuditEntry{
			Actor: "detection", Action: events.AuditCaseOpened, Subject: cs.ID,
			Detail: map[string]string{
				"case_id": cs.ID, "rule": cs.Rule, "resource": cs.Resource,
				"requests": fmt.Sprint(len(cs.RequestIDs)),
			},
			At: cs.OpenedAt,
		})
		if err != nil {
			lg.Error("case opening not audited", zap.String("geo", cs.Geo), zap.String("case_id", cs.ID), zap.Error(err))
		}
	}
}
