// Package admin serves a service's operational endpoints on its admin
// port: /healthz (the process is up), /readyz (it can do its work, 503
// while starting or draining), Prometheus /metrics and, only when turned
// on, Go's profiles under /debug/pprof/. They carry IDs, counts and
// timings only, never content.
package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Limits of the admin server. Probes and scrapes send small headers and
// no body; a profile or trace may run for up to WriteTimeout (pprof
// refuses a longer one with a clear error).
const (
	// MaxHeaderBytes bounds a request's line and headers; more is 431.
	MaxHeaderBytes = 16 << 10
	// ReadHeaderTimeout and ReadTimeout bound the time to send a request.
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 10 * time.Second
	// WriteTimeout bounds a whole response, so a scraper that stops
	// reading cannot hold a handler; it leaves room for a 60 s profile.
	WriteTimeout = 90 * time.Second
	// IdleTimeout bounds a kept-alive connection between requests.
	IdleTimeout = time.Minute
)

// ReadyFunc reports why the service is not ready, or nil.
type ReadyFunc func(ctx context.Context) error

// Server is the admin HTTP server.
type Server struct {
	ln       net.Listener
	srv      *http.Server
	ready    atomic.Pointer[ReadyFunc]
	draining atomic.Bool
	done     chan error
}

// Options adjust the admin server.
type Options struct {
	// Pprof serves Go's profiles under /debug/pprof/ (index, CPU profile,
	// execution trace). Off by default: a profile or trace keeps a
	// process busy for as long as the caller asks, and shows its inner
	// workings to whoever reaches the admin address.
	Pprof bool
}

// Listen binds addr and serves in the background. Until SetReady is
// called, /readyz answers 503.
func Listen(addr string, gatherer prometheus.Gatherer, o Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin server on %s: %w", addr, err)
	}
	s := &Server{ln: ln, done: make(chan error, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	if o.Pprof {
		// Profiles show where time goes, never request content.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: ReadHeaderTimeout, ReadTimeout: ReadTimeout,
		WriteTimeout: WriteTimeout, IdleTimeout: IdleTimeout, MaxHeaderBytes: MaxHeaderBytes}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// SetReady installs the readiness check.
func (s *Server) SetReady(f ReadyFunc) { s.ready.Store(&f) }

// Drain makes /readyz answer 503 from now on, so load balancers stop
// sending work before the service stops taking it.
func (s *Server) Drain() { s.draining.Store(true) }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("draining\n"))
		return
	}
	f := s.ready.Load()
	if f == nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("starting\n"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	if err := (*f)(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %v\n", err)
		return
	}
	w.Write([]byte("ready\n"))
}

// Close shuts the server down, waiting up to 5 s for requests in flight.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
