// Package edge is ingress's HTTP server: it gives every request an ID
// (x-request-id and apim-request-id on every response), logs one line per
// request (method, route, status, bytes, duration; never a body), routes
// to the management API and the app API, serves HTTPS (TLS 1.2 or newer)
// when given a TLS configuration, and shuts down gracefully.
//
// It bounds what a slow or hostile client can hold (Limits): the time to
// send headers and the whole request, the size of the headers, the time
// a kept-alive connection may idle, and the time to take a response.
package edge

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/services/ingress/apierr"
)

// Config configures the server.
type Config struct {
	// Addr is the listen address ("127.0.0.1:8080").
	Addr string
	// TLS, when set, makes the server speak HTTPS only; nil serves plain
	// HTTP.
	TLS *tls.Config
	Log *zap.Logger
	// Routes maps path prefixes ("/mgmt/") to their handlers.
	Routes map[string]http.Handler
	// Limits bound slow and hostile clients; zero fields take their
	// defaults.
	Limits Limits
	// Registerer, when set, receives the server's metrics
	// (terroir_http_requests_in_flight).
	Registerer prometheus.Registerer
}

// Limits bound what one client can hold of the server.
type Limits struct {
	// ReadHeaderTimeout bounds the time to send a request's headers
	// (default 10 s); then the connection is closed.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the time to send a whole request, headers and
	// body (default 30 s); a body still arriving then is answered 408.
	ReadTimeout time.Duration
	// WriteTimeout bounds, from the end of the headers, the time to
	// handle a request and write its response (default 30 s). A handler
	// that waits longer on purpose (the app API waits for the model)
	// puts its own deadline on each write instead, so a long stream is
	// bounded per write, never as a whole.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a kept-alive connection may wait for
	// its next request (default 2 min).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers (default
	// 64 KiB); more is answered 431.
	MaxHeaderBytes int
}

func (l Limits) withDefaults() Limits {
	d := Limits{ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	if l.ReadHeaderTimeout > 0 {
		d.ReadHeaderTimeout = l.ReadHeaderTimeout
	}
	if l.ReadTimeout > 0 {
		d.ReadTimeout = l.ReadTimeout
	}
	if l.WriteTimeout > 0 {
		d.WriteTimeout = l.WriteTimeout
	}
	if l.IdleTimeout > 0 {
		d.IdleTimeout = l.IdleTimeout
	}
	if l.MaxHeaderBytes > 0 {
		d.MaxHeaderBytes = l.MaxHeaderBytes
	}
	return d
}

// Server is the listening HTTP server.
type Server struct {
	log      *zap.Logger
	ln       net.Listener
	srv      *http.Server
	inFlight prometheus.Gauge
	tls      bool
}

// Listen binds cfg.Addr; Run serves on it.
func Listen(cfg Config) (*Server, error) {
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", cfg.Addr, err)
	}
	s := &Server{log: cfg.Log.Named("http"), ln: ln, tls: cfg.TLS != nil, inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "terroir_http_requests_in_flight", Help: "HTTP requests whose handler is running."})}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(s.inFlight); err != nil {
			ln.Close()
			return nil, fmt.Errorf("registering HTTP metrics: %w", err)
		}
	}
	mux := http.NewServeMux()
	for prefix, h := range cfg.Routes {
		mux.Handle(prefix, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apierr.Write(w, apierr.NotFound("not_found", "no endpoint at %s %s", r.Method, r.URL.Path))
	})
	lim := cfg.Limits.withDefaults()
	s.srv = &http.Server{
		Handler:           s.withRequestID(mux),
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog:          zap.NewStdLog(s.log.WithOptions(zap.IncreaseLevel(zap.WarnLevel))),
		TLSConfig:         cfg.TLS,
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then stops taking requests and waits for
// those in flight, at most drain.
func (s *Server) Run(ctx context.Context, drain time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		if s.tls {
			// The certificate comes from TLSConfig (GetCertificate).
			errc <- s.srv.ServeTLS(s.ln, "", "")
			return
		}
		errc <- s.srv.Serve(s.ln)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serving HTTP: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("requests still in flight after the drain timeout; closing")
		_ = s.srv.Close()
		return nil
	}
	if serr := <-errc; err == nil && !errors.Is(serr, http.ErrServerClosed) {
		err = serr
	}
	return err
}

// NewRequestID returns a fresh request ID (a random UUID).
func NewRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

type recorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += n
	return n, err
}

// Flush lets streaming handlers flush through the recorder.
func (r *recorder) Flush() { _ = r.FlushError() }

// FlushError flushes and reports a failed write, so that
// http.ResponseController.Flush tells a streaming handler its client is
// gone.
func (r *recorder) FlushError() error { return http.NewResponseController(r.ResponseWriter).Flush() }

// Unwrap gives http.ResponseController the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// withRequestID assigns the request ID (the same value in both headers;
// handlers read it from the request's x-request-id header) and logs the
// request when it ends.
func (s *Server) withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := NewRequestID()
		r.Header.Set("x-request-id", id)
		w.Header().Set("x-request-id", id)
		w.Header().Set("apim-request-id", id)
		rec := &recorder{ResponseWriter: w}
		start := time.Now()
		s.inFlight.Inc()
		defer s.inFlight.Dec()
		next.ServeHTTP(rec, r)
		s.log.Info("request", zap.String("request_id", id), zap.String("method", r.Method), zap.String("path", r.URL.Path),
			zap.Int("status", rec.status), zap.Int("bytes", rec.bytes), zap.Duration("duration", time.Since(start)))
	})
}
