// Package edge is ingress's HTTP server: it gives every request an ID
// (x-request-id and apim-request-id on every response), logs one line per
// request (method, route, status, bytes, duration; never a body), routes
// to the management API and the app API, serves HTTPS (TLS 1.2 or newer)
// when given a TLS configuration, and shuts down gracefully.
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
}

// Server is the listening HTTP server.
type Server struct {
	log *zap.Logger
	ln  net.Listener
	srv *http.Server
	tls bool
}

// Listen binds cfg.Addr; Run serves on it.
func Listen(cfg Config) (*Server, error) {
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", cfg.Addr, err)
	}
	s := &Server{log: cfg.Log.Named("http"), ln: ln, tls: cfg.TLS != nil}
	mux := http.NewServeMux()
	for prefix, h := range cfg.Routes {
		mux.Handle(prefix, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apierr.Write(w, apierr.NotFound("not_found", "no endpoint at %s %s", r.Method, r.URL.Path))
	})
	s.srv = &http.Server{
		Handler:           s.withRequestID(mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
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
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

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
		next.ServeHTTP(rec, r)
		s.log.Info("request", zap.String("request_id", id), zap.String("method", r.Method), zap.String("path", r.URL.Path),
			zap.Int("status", rec.status), zap.Int("bytes", rec.bytes), zap.Duration("duration", time.Since(start)))
	})
}
