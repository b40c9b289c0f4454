// Package redistest starts a real redis-server (the Debian package) for a
// test, on a free loopback port, without persistence, optionally asking
// clients for a password or an ACL user's credentials and speaking only
// TLS; or, for tests of an outage, a Server that can be stopped and
// started again on its port, keeping its data. `make test` installs
// redis-server when it is missing; a test that needs it fails, naming it,
// rather than skipping.
package redistest

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Start runs redis-server until t ends and returns its address.
func Start(t testing.TB) string {
	t.Helper()
	return StartWith(t, Options{})
}

// Options secure a test server.
type Options struct {
	// Password, when set, is required of every client (requirepass: the
	// password of the default user).
	Password string
	// User and UserPassword, when set, add an ACL user allowed every
	// command and key.
	User, UserPassword string
	// TLS, when set, makes the server speak TLS only.
	TLS *TLS
}

// TLS are the server's PEM files.
type TLS struct {
	CertFile, KeyFile string
	// CAFile holds the CA that issues client certificates.
	CAFile string
	// ClientCerts makes the server require a client certificate
	// (tls-auth-clients yes).
	ClientCerts bool
}

// StartWith runs redis-server secured as o says until t ends and returns
// its address.
func StartWith(t testing.TB, o Options) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not installed (apt-get install redis-server; `make test` does this)")
	}
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		args := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir(), "--loglevel", "warning"}
		if o.TLS == nil {
			args = append(args, "--port", strconv.Itoa(port))
		} else {
			auth := "no"
			if o.TLS.ClientCerts {
				auth = "yes"
			}
			args = append(args, "--port", "0", "--tls-port", strconv.Itoa(port), "--tls-cert-file", o.TLS.CertFile,
				"--tls-key-file", o.TLS.KeyFile, "--tls-ca-cert-file", o.TLS.CAFile, "--tls-auth-clients", auth)
		}
		if o.Password != "" {
			args = append(args, "--requirepass", o.Password)
		}
		if o.User != "" {
			args = append(args, "--user", o.User, "on", ">"+o.UserPassword, "~*", "&*", "+@all")
		}
		cmd := exec.Command(bin, args...)
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting redis-server: %v", err)
		}
		if waitUp(addr, o.TLS != nil, 5*time.Second) {
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			})
			return addr
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait() // port taken in between: try another
	}
	t.Fatal("redis-server did not start")
	return ""
}

// Server is a redis-server that keeps its data in an append-only file
// synced on every write, so it can be stopped and started again, as an
// outage does, without losing what it acknowledged.
type Server struct {
	// Addr is the address it listens on, the same across restarts.
	Addr string

	t    testing.TB
	bin  string
	dir  string
	port int
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// StartServer runs a persistent redis-server until t ends.
func StartServer(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not installed (apt-get install redis-server; `make test` does this)")
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(s.Stop)
	for range 5 {
		if s.port, err = freePort(); err != nil {
			t.Fatal(err)
		}
		s.Addr = "127.0.0.1:" + strconv.Itoa(s.port)
		if s.start() {
			return s
		}
	}
	t.Fatal("redis-server did not start")
	return nil
}

func (s *Server) start() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", s.dir, "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	if !waitUp(s.Addr, false, 5*time.Second) {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return false
	}
	s.cmd = cmd
	return true
}

// Stop kills the server (as a crash would: what it acknowledged is on
// disk) and waits until it is gone. It is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts a stopped server again on its address, with its data.
func (s *Server) Restart() {
	s.t.Helper()
	if !s.start() {
		s.t.Fatalf("redis-server did not start again on %s", s.Addr)
	}
}

// Client returns a go-redis client for a fresh server, closed when t ends.
func Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: Start(t)})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitUp waits until the server answers PING, with PONG or, when it
// asks for a password, NOAUTH. A TLS server is up once it completes a
// handshake (its certificate is not checked: only whether it listens).
func waitUp(addr string, useTLS bool, within time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for ctx.Err() == nil {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			if useTLS {
				tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true}) // a readiness probe, not a client
				err := tc.Handshake()
				c.Close()
				if err == nil || strings.Contains(err.Error(), "certificate") {
					return true
				}
			} else {
				_, _ = c.Write([]byte("PING\r\n"))
				line, _ := bufio.NewReader(c).ReadString('\n')
				c.Close()
				if strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH") {
					return true
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}
