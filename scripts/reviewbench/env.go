package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/scripts/internal/bench"
	"github.com/terroir-ai/terroir/services/review/store"
)

// geo is the one geography measured: a store indexes each geography in its
// own Redis, so one is representative.
const geo = "eu"

// env is what the measurements share: the cluster, Redis, a bus standing
// for the producers of the abuse log (content safety) and one standing for
// the review service, which runs the store.
type env struct {
	*bench.Setup
	cfg      config
	stderr   io.Writer
	redisCmd *exec.Cmd
	redisVer string
	rdb      *redis.Client
	pub      *bus.Bus
	rev      *bus.Bus
	reg      *prometheus.Registry
	state    *control.State
	store    *store.Store
	prompt   json.RawMessage
	output   json.RawMessage
}

func newEnv(ctx context.Context, cfg config, stderr io.Writer) (_ *env, err error) {
	setup, err := bench.NewSetup("reviewbench", []string{geo}, stderr, cfg.verbose)
	if err != nil {
		return nil, err
	}
	e := &env{Setup: setup, cfg: cfg, stderr: stderr}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if err := e.startRedis(ctx); err != nil {
		return nil, err
	}
	fake, err := e.StartKfake()
	if err != nil {
		return nil, err
	}
	newBus := func(instance string, reg prometheus.Registerer) (*bus.Bus, error) {
		return e.NewBus(ctx, bus.Config{Namespace: "terroir", Brokers: map[string][]string{geo: fake.ListenAddrs()}, InstanceID: instance, Registerer: reg})
	}
	if e.pub, err = newBus("reviewbench-contentsafety", nil); err != nil {
		return nil, err
	}
	e.reg = prometheus.NewRegistry()
	if e.rev, err = newBus("reviewbench-review", e.reg); err != nil {
		return nil, err
	}

	e.state = control.NewState(e.Log)
	now := time.Now().UTC()
	for i := range cfg.resources {
		spec, err := json.Marshal(control.Resource{Name: e.resource(i), Location: geo, ContentLogging: true, CreatedAt: now})
		if err != nil {
			return nil, err
		}
		e.state.ApplyChange(events.ControlChange{Kind: events.ControlResource, ID: e.resource(i), Actor: "reviewbench", At: now, Spec: spec})
	}
	e.store, err = store.New(store.Config{Bus: e.rev, Redis: map[string]*redis.Client{geo: e.rdb}, State: e.state, Geos: []string{geo}, Log: e.Log})
	if err != nil {
		return nil, err
	}
	e.prompt = bench.JSONBody(`{"messages":[{"role":"user","content":"`, `"}]}`, cfg.contentSize)
	e.output = bench.JSONBody(`{"choices":[{"index":0,"message":{"role":"assistant","content":"`, `"},"finish_reason":"stop"}]}`, cfg.contentSize)
	return e, nil
}

// requests is the number of requests published, records their parts.
func (e *env) requests() int { return e.cfg.records / 2 }
func (e *env) records() int  { return 2 * e.requests() }

func (e *env) resource(i int) string { return fmt.Sprintf("bench-%04d", i%e.cfg.resources) }
func (e *env) requestID(i int) string {
	return fmt.Sprintf("req_%010d", i)
}

// startRedis runs a redis-server of its own on a free loopback port,
// without persistence.
func (e *env) startRedis(ctx context.Context) error {
	bin, err := exec.LookPath(e.cfg.redisServer)
	if err != nil {
		return fmt.Errorf("redis-server not found (apt-get install redis-server, or -redis-server): %w", err)
	}
	if out, err := exec.CommandContext(ctx, bin, "--version").Output(); err == nil {
		e.redisVer = strings.TrimSpace(string(out))
		if _, v, ok := strings.Cut(e.redisVer, " v="); ok {
			e.redisVer, _, _ = strings.Cut(v, " ")
		}
	}
	for range 5 {
		addr, err := bench.FreeAddr()
		if err != nil {
			return err
		}
		_, port, _ := net.SplitHostPort(addr)
		cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", e.Tmp, "--loglevel", "warning")
		if e.cfg.verbose {
			cmd.Stdout, cmd.Stderr = e.stderr, e.stderr
		}
		setDeathSignal(cmd)
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting redis-server: %w", err)
		}
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && rdb.Ping(ctx).Err() != nil {
			time.Sleep(20 * time.Millisecond)
		}
		if rdb.Ping(ctx).Err() == nil {
			e.redisCmd, e.rdb = cmd, rdb
			e.OnClose(func() {
				_ = rdb.Close()
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			})
			return nil
		}
		_ = rdb.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait() // port taken in between: try another
	}
	return errors.New("redis-server did not start")
}

// facts describes where the numbers were measured and the load.
func (e *env) facts() string {
	return bench.Machine(bench.KfakeInProcess) + " redis-server=" + e.redisVer + "\n" +
		fmt.Sprintf("load: %d records (%d requests × prompt and output part) of %d-byte content, %d resources, one geography",
			e.records(), e.requests(), e.cfg.contentSize, e.cfg.resources)
}
