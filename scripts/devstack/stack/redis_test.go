package stack

import (
	"net"
	"os/exec"
	"strings"
	"testing"
)

func TestStartRedis(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		embedded bool
	}{
		{name: "embedded", embedded: true},
		{name: "redis-server"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if !tc.embedded {
				if _, err := exec.LookPath("redis-server"); err != nil {
					t.Fatal("redis-server is not installed (apt-get install redis-server; `make test` does this)")
				}
			}
			var buf syncBuffer
			r, err := StartRedis(t.Context(), RedisConfig{
				Addr:     freeAddr(t),
				Dir:      t.TempDir(),
				Embedded: tc.embedded,
				Out:      NewOutput(&buf, false),
			})
			if err != nil {
				t.Fatal(err)
			}
			if r.Embedded() != tc.embedded {
				t.Errorf("Embedded() = %v, want %v", r.Embedded(), tc.embedded)
			}
			if err := Ping(t.Context(), r.Addr()); err != nil {
				t.Errorf("PING: %v", err)
			}
			if tc.embedded && !strings.Contains(buf.String(), "in memory only") {
				t.Errorf("no in-memory notice in output %q", buf.String())
			}
			if err := r.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := Ping(t.Context(), r.Addr()); err == nil {
				t.Error("Redis still answers after Close")
			}
		})
	}
}

func TestStartRedisAddressInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = StartRedis(t.Context(), RedisConfig{Addr: ln.Addr().String(), Dir: t.TempDir(), Embedded: true})
	if err == nil || !strings.Contains(err.Error(), "not free") {
		t.Errorf("StartRedis on a busy address: err = %v, want 'not free'", err)
	}
}
