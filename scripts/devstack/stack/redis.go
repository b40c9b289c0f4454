package stack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// RedisConfig says where and how to run the dev stack's Redis.
type RedisConfig struct {
	// Addr is the host:port to listen on.
	Addr string
	// Dir holds redis-server's append-only file.
	Dir string
	// Server is the redis-server executable; empty means look it up on
	// PATH and fall back to an embedded, memory-only server.
	Server string
	// Embedded forces the embedded server even when redis-server exists.
	Embedded bool
	// StartTimeout bounds the wait for redis-server to answer PING
	// (default 15s).
	StartTimeout time.Duration
	// StopTimeout bounds the wait for redis-server to exit on SIGTERM
	// before it is killed (default 10s).
	StopTimeout time.Duration
	// Out receives redis-server's output and the launcher's messages.
	Out *Output
}

// Redis is the dev stack's Redis: a redis-server child process, or, when none
// is installed, an embedded Redis-protocol server that keeps everything in
// memory.
type Redis struct {
	addr        string
	proc        *Proc
	mini        *miniredis.Miniredis
	stopTimeout time.Duration
}

// StartRedis starts Redis as cfg says and returns once it answers PING.
func StartRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 15 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	// redis-server failing to bind would exit, but a PING would then be
	// answered by whatever already holds the port; refuse that up front.
	if err := checkFree(cfg.Addr); err != nil {
		return nil, fmt.Errorf("starting Redis: %w", err)
	}
	server := cfg.Server
	if server == "" && !cfg.Embedded {
		if p, err := exec.LookPath("redis-server"); err == nil {
			server = p
		}
	}
	if server == "" || cfg.Embedded {
		return startMiniredis(cfg)
	}
	return startRedisServer(ctx, server, cfg)
}

func startMiniredis(cfg RedisConfig) (*Redis, error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(cfg.Addr); err != nil {
		return nil, fmt.Errorf("starting embedded Redis on %s: %w", cfg.Addr, err)
	}
	if cfg.Out != nil {
		cfg.Out.Printf("redis", "redis-server was not found on PATH: using an embedded Redis on %s; "+
			"conversation and job state is held in memory only and lost when the stack stops", cfg.Addr)
	}
	return &Redis{addr: cfg.Addr, mini: m}, nil
}

func startRedisServer(ctx context.Context, server string, cfg RedisConfig) (*Redis, error) {
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("parsing Redis address %q: %w", cfg.Addr, err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating Redis data directory: %w", err)
	}
	spec := ProcSpec{
		Name: "redis",
		Path: server,
		Args: []string{
			"--port", port,
			"--bind", host,
			"--dir", cfg.Dir,
			"--appendonly", "yes",
			"--save", "",
			"--daemonize", "no",
			"--protected-mode", "yes",
			"--loglevel", "warning",
		},
		Dir: cfg.Dir,
		Env: os.Environ(),
	}
	if cfg.Out != nil {
		spec.Out = cfg.Out.Writer("redis")
	}
	proc, err := StartProc(spec)
	if err != nil {
		return nil, fmt.Errorf("starting redis-server: %w", err)
	}
	r := &Redis{addr: cfg.Addr, proc: proc, stopTimeout: cfg.StopTimeout}
	if err := waitPing(ctx, cfg.Addr, proc, cfg.StartTimeout); err != nil {
		_ = proc.Stop(cfg.StopTimeout)
		return nil, err
	}
	return r, nil
}

// waitPing polls addr with PING until it answers +PONG, the process exits,
// or timeout passes.
func waitPing(ctx context.Context, addr string, proc *Proc, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = Ping(ctx, addr); last == nil {
			return nil
		}
		select {
		case <-proc.Done():
			return fmt.Errorf("redis-server exited before answering PING on %s: %s", addr, proc.ExitStatus())
		case <-ctx.Done():
			return fmt.Errorf("waiting for redis-server on %s to answer PING: %w (last error: %v)", addr, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// Ping sends a PING to the Redis at addr and checks for +PONG.
func Ping(ctx context.Context, addr string) error {
	var d net.Dialer
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dialing Redis: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// A RESP array rather than an inline command: the embedded server
	// understands only the former.
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return fmt.Errorf("sending PING: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading PING reply: %w", err)
	}
	if reply := strings.TrimSpace(line); reply != "+PONG" {
		return fmt.Errorf("unexpected PING reply %q", reply)
	}
	return nil
}

// checkFree reports an error when addr cannot be listened on.
func checkFree(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			return fmt.Errorf("%s is not free (another dev stack running?): %w", addr, err)
		}
		return fmt.Errorf("checking %s: %w", addr, err)
	}
	return ln.Close()
}

// Addr returns the host:port Redis listens on.
func (r *Redis) Addr() string { return r.addr }

// Embedded reports whether this is the in-memory embedded server.
func (r *Redis) Embedded() bool { return r.mini != nil }

// Close stops Redis: SIGTERM to redis-server (which then flushes its
// append-only file), bounded by the stop timeout, or closing the embedded
// server. It returns an error if redis-server did not exit cleanly.
func (r *Redis) Close() error {
	if r.mini != nil {
		r.mini.Close()
		return nil
	}
	return r.proc.Stop(r.stopTimeout)
}

// Done is closed if redis-server exits; it is nil (never ready) for the
// embedded server.
func (r *Redis) Done() <-chan struct{} {
	if r.proc == nil {
		return nil
	}
	return r.proc.Done()
}

// ExitStatus describes how redis-server ended ("running" while it runs).
func (r *Redis) ExitStatus() string {
	if r.proc == nil {
		return "running"
	}
	return r.proc.ExitStatus()
}
