package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/daemon"
	"github.com/terroir-ai/terroir/pkg/daemon/daemontest"
	"github.com/terroir-ai/terroir/pkg/events"
)

// runWith returns a run function that starts a daemon and lets the test
// add parts and reach the daemon.
func runWith(useRedis bool, setup func(d *daemon.Daemon)) daemon.RunFunc {
	return func(ctx context.Context, getenv func(string) string) error {
		env := config.New(getenv)
		cfg := daemon.LoadConfig(env, "testsvc", "127.0.0.1:0")
		cfg.UseRedis = useRedis
		if err := env.Err(); err != nil {
			return err
		}
		d, err := daemon.Start(ctx, cfg)
		if err != nil {
			return err
		}
		setup(d)
		return d.Run(ctx)
	}
}

func TestReadinessGoesDownWhileDraining(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	draining := make(chan struct{})
	s := daemontest.Start(t, runWith(true, func(d *daemon.Daemon) {
		d.Go("slow", func(ctx context.Context) error {
			<-ctx.Done()
			close(draining)
			<-release // finishing work in hand
			return nil
		})
	}), nil)
	stopped := make(chan error, 1)
	go func() { stopped <- s.Stop(t) }()
	<-draining
	if code, body := s.Get(t, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Errorf("while draining /readyz = %d %q", code, body)
	}
	if code, _ := s.Get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("while draining /healthz = %d", code)
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("clean drain returned %v", err)
	}
}

func TestFailingPartStopsTheService(t *testing.T) {
	t.Parallel()
	boom := errors.New("disk on fire")
	fail := make(chan struct{})
	s := daemontest.Start(t, runWith(false, func(d *daemon.Daemon) {
		d.Go("worker", func(ctx context.Context) error {
			select {
			case <-fail:
				return boom
			case <-ctx.Done():
				return nil
			}
		})
	}), nil)
	close(fail)
	err := s.Stop(t)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "worker") {
		t.Fatalf("got %v, want the part's error naming it", err)
	}
}

func TestBadConfigurationIsReportedNotPanicked(t *testing.T) {
	t.Parallel()
	run := runWith(false, func(*daemon.Daemon) {})
	env := map[string]string{"TERROIR_GEOS": "eu,atlantis", "TERROIR_DRAIN_TIMEOUT": "-1s", "TERROIR_LOG_LEVEL": "loud"}
	err := run(t.Context(), func(k string) string { return env[k] })
	if err == nil {
		t.Fatal("started with bad configuration")
	}
	for _, v := range []string{"TERROIR_GEOS", "TERROIR_DRAIN_TIMEOUT", "TERROIR_LOG_LEVEL"} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error does not name %s: %v", v, err)
		}
	}
	env = map[string]string{"TERROIR_KEY_FILE": "/nonexistent/keyring.json", "TERROIR_ADMIN_ADDR": "127.0.0.1:0"}
	if err := run(t.Context(), func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), "TERROIR_KEY_FILE") {
		t.Errorf("missing key file: %v", err)
	}
}

func TestNotReadyWithoutRedis(t *testing.T) {
	t.Parallel()
	env := daemontest.Env(t, map[string]string{"TERROIR_REDIS_ADDR": daemontest.FreeAddr(t)}) // nobody listens
	s := daemontest.Launch(t, runWith(true, func(*daemon.Daemon) {}), env)
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := s.Get(t, "/readyz")
		if code == http.StatusServiceUnavailable && strings.Contains(body, "redis of") {
			break
		}
		if code == http.StatusOK {
			t.Fatal("ready without Redis")
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never named Redis: %d %q", code, body)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	if err := s.Stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

func TestControlViewFollowsTheTopic(t *testing.T) {
	t.Parallel()
	got := make(chan *daemon.Daemon, 1)
	daemontest.Start(t, runWith(false, func(d *daemon.Daemon) { got <- d }), nil)
	d := <-got
	spec, _ := json.Marshal(map[string]string{"location": "eu"})
	change := events.ControlChange{Kind: events.ControlResource, ID: "acme", Actor: "operator", At: time.Now().UTC(), Spec: spec}
	key := control.Key(events.ControlResource, "", "acme")
	if err := d.Bus.Publish(t.Context(), "eu", bus.StreamControl, bus.Meta{Key: key}, change); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { _, ok := d.Control.Get(events.ControlResource, "", "acme"); return ok })
	if l := d.Control.List(events.ControlResource, ""); len(l) != 1 || l[0].ID != "acme" {
		t.Fatalf("List = %+v", l)
	}
	if err := d.Bus.Tombstone(t.Context(), "eu", bus.StreamControl, key); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { _, ok := d.Control.Get(events.ControlResource, "", "acme"); return !ok })
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// TestTransitRetentionIsConfigured starts a service with
// TERROIR_TRANSIT_RETENTION and describes the transit topics it
// provisioned; an unusable value is refused, naming the variable.
func TestTransitRetentionIsConfigured(t *testing.T) {
	t.Parallel()
	var adm *kadm.Client
	var ns string
	s := daemontest.Start(t, runWith(false, func(d *daemon.Daemon) {
		adm, _ = d.Bus.Admin("eu")
		ns = d.Bus.Namespace()
	}), map[string]string{"TERROIR_TRANSIT_RETENTION": "15m"})
	for _, stream := range bus.TransitStreams {
		topic := bus.TopicName(ns, "eu", stream)
		got := bustest.TopicConfigs(t, adm, topic)
		if got["retention.ms"] != "900000" || got["segment.ms"] != "900000" {
			t.Errorf("%s: retention.ms %q, segment.ms %q, want 900000 for 15m", stream, got["retention.ms"], got["segment.ms"])
		}
	}
	if err := s.Stop(t); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"0s", "30s", "8d", "an hour"} {
		env := map[string]string{"TERROIR_TRANSIT_RETENTION": bad, "TERROIR_ADMIN_ADDR": "127.0.0.1:0"}
		err := runWith(false, func(*daemon.Daemon) {})(t.Context(), func(k string) string { return env[k] })
		if err == nil || !strings.Contains(err.Error(), "TERROIR_TRANSIT_RETENTION") {
			t.Errorf("TERROIR_TRANSIT_RETENTION=%s: %v", bad, err)
		}
	}
}

// TestProfilingNeedsTERROIR_ADMIN_PPROF: the admin server serves profiles
// only when TERROIR_ADMIN_PPROF=1.
func TestProfilingNeedsTERROIR_ADMIN_PPROF(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		value string
		want  int
	}{
		{"", http.StatusNotFound},
		{"0", http.StatusNotFound},
		{"1", http.StatusOK},
	} {
		t.Run("TERROIR_ADMIN_PPROF="+tt.value, func(t *testing.T) {
			t.Parallel()
			s := daemontest.Start(t, runWith(false, func(*daemon.Daemon) {}), map[string]string{"TERROIR_ADMIN_PPROF": tt.value})
			if code, _ := s.Get(t, "/debug/pprof/"); code != tt.want {
				t.Errorf("/debug/pprof/ = %d, want %d", code, tt.want)
			}
		})
	}
}
