// Package daemon is the lifecycle every Terroir service shares: it reads
// the common TERROIR_* configuration, builds the logger, metrics registry,
// admin server, bus (with topic provisioning and data-key tables), Redis
// clients and control-plane view, runs the service's parts, and on SIGTERM
// drains them: readiness goes 503, parts stop taking work and finish what
// they hold (bounded), offsets are committed, clients closed.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/admin"
	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/keys"
	"github.com/terroir-ai/terroir/pkg/logging"
)

// Config is the configuration every service shares.
type Config struct {
	// Service names the service ("ingress").
	Service string
	// Geos are the geographies this instance serves (TERROIR_GEOS).
	Geos []string
	// Brokers are the Kafka bootstrap servers per geography
	// (TERROIR_KAFKA_BROKERS, TERROIR_KAFKA_BROKERS_<GEO>).
	Brokers map[string][]string
	// KafkaSecurity is how each geography's cluster is reached: TLS and
	// SASL (TERROIR_KAFKA_TLS_*, TERROIR_KAFKA_SASL_*; see
	// bus.SecurityFromEnv).
	KafkaSecurity map[string]bus.Security
	// Redis says how each geography's Redis is reached: address or URL
	// (TERROIR_REDIS_ADDR, TERROIR_REDIS_ADDR_<GEO>), credentials
	// (TERROIR_REDIS_USERNAME, TERROIR_REDIS_PASSWORD[_FILE]) and TLS
	// (TERROIR_REDIS_TLS*).
	Redis map[string]*redis.Options
	// AdminAddr serves /healthz, /readyz, /metrics (TERROIR_ADMIN_ADDR;
	// each service's default is a loopback address).
	AdminAddr string
	// Pprof serves Go's profiles on the admin address under /debug/pprof/
	// (TERROIR_ADMIN_PPROF=1; off by default).
	Pprof bool
	// KeyFile is the keyring holding the key-encryption keys
	// (TERROIR_KEY_FILE).
	KeyFile string
	// KeyRotateSeals and KeyRotateAge say when a data key (a resource's,
	// or a geography's abuse key) is replaced by a new version: after
	// this many seals by one process (TERROIR_KEY_ROTATE_SEALS, default
	// 2^24, at most 2^30) or at this age (TERROIR_KEY_ROTATE_AGE, default
	// 168h); older versions stay readable until the resource is shredded.
	KeyRotateSeals int
	KeyRotateAge   time.Duration
	// TopicsFile defines the provisioned streams (TERROIR_TOPICS_FILE).
	TopicsFile string
	// Namespace prefixes topic names (TERROIR_KAFKA_NAMESPACE, default terroir).
	Namespace string
	// Replication is the replication factor of provisioned topics
	// (TERROIR_KAFKA_REPLICATION, default 1).
	Replication int
	// LogFormat is json or console, LogLevel debug|info|warn|error.
	LogFormat, LogLevel string
	// LogFlush is how long log lines gather before they are written
	// together (TERROIR_LOG_FLUSH, default 100 ms; 0 writes each line).
	LogFlush time.Duration
	// InstanceID names this process on the bus (TERROIR_INSTANCE_ID).
	InstanceID string
	// DrainTimeout bounds the drain on shutdown (TERROIR_DRAIN_TIMEOUT).
	DrainTimeout time.Duration
	// TransitRetention is how long the transit topics (requests,
	// inference, completions, replies) keep records
	// (TERROIR_TRANSIT_RETENTION, default 1h, from 1m to 168h).
	TransitRetention time.Duration
	// Linger and SideLinger are the producers' batching waits
	// (TERROIR_KAFKA_LINGER, default 0; TERROIR_KAFKA_SIDE_LINGER, default
	// 5ms; each up to 1s).
	Linger, SideLinger time.Duration
	// SessionTimeout is how long a consumer group waits for a member that
	// died before its partitions go to the others
	// (TERROIR_KAFKA_SESSION_TIMEOUT, default 45s, from 1s to 5m; the
	// broker's group.min.session.timeout.ms, 6s by default, is the floor).
	SessionTimeout time.Duration
	// Lanes are the request-path lanes this instance serves
	// (TERROIR_LANES, default "realtime,batch"; see bus.Lane). Only the
	// services on the request path, content safety and inference, read
	// it; an instance serving the batch lane alone is usually also given
	// a low TERROIR_CPU_PRIORITY.
	Lanes []bus.Lane
	// CPUPriority lowers the CPU priority of every thread of the process
	// (TERROIR_CPU_PRIORITY): "normal" (the default) leaves it, "low"
	// sets the lowest nice value (19), "idle" also puts the threads in
	// Linux's SCHED_IDLE class, where they run only on CPU that no
	// normal thread wants and give it up as soon as one wakes. The batch
	// lane's instances in `make run` run "idle".
	CPUPriority string
	// UseRedis is set by services that keep state in Redis.
	UseRedis bool
}

// LoadConfig reads the common variables. The service reads its own from
// the same Env and then checks env.Err(), so every problem is reported at
// once.
func LoadConfig(env *config.Env, service, defaultAdminAddr string) Config {
	c := Config{Service: service}
	c.Geos = env.Geos("TERROIR_GEOS", "eu,us")
	c.Brokers = map[string][]string{}
	for g, v := range env.PerGeo("TERROIR_KAFKA_BROKERS", c.Geos, "127.0.0.1:9092") {
		for _, b := range strings.Split(v, ",") {
			if b = strings.TrimSpace(b); b != "" {
				c.Brokers[g] = append(c.Brokers[g], b)
			}
		}
		if len(c.Brokers[g]) == 0 {
			env.Fail("TERROIR_KAFKA_BROKERS_"+strings.ToUpper(g), errors.New("no bootstrap server"))
		}
	}
	c.KafkaSecurity = bus.SecurityFromEnv(env, c.Geos)
	c.Redis = redisOptions(env, c.Geos)
	c.AdminAddr = env.String("TERROIR_ADMIN_ADDR", defaultAdminAddr)
	c.Pprof = env.OneOf("TERROIR_ADMIN_PPROF", "0", "0", "1") == "1"
	c.KeyFile = env.String("TERROIR_KEY_FILE", ".terroir/keys/keyring.json")
	c.KeyRotateSeals = env.Int("TERROIR_KEY_ROTATE_SEALS", int(keys.DefaultRotateSeals), 1, 1<<30)
	c.KeyRotateAge = env.Duration("TERROIR_KEY_ROTATE_AGE", keys.DefaultRotateAge)
	c.TopicsFile = env.String("TERROIR_TOPICS_FILE", "deployments/topics.yaml")
	c.Namespace = env.String("TERROIR_KAFKA_NAMESPACE", bus.DefaultNamespace)
	c.Replication = env.Int("TERROIR_KAFKA_REPLICATION", 1, 1, 7)
	c.LogFormat = env.OneOf("TERROIR_LOG_FORMAT", "json", "json", "console")
	c.LogLevel = env.OneOf("TERROIR_LOG_LEVEL", "info", "debug", "info", "warn", "error")
	c.LogFlush = env.Wait("TERROIR_LOG_FLUSH", 100*time.Millisecond)
	if c.LogFlush > 10*time.Second {
		env.Fail("TERROIR_LOG_FLUSH", fmt.Errorf("%s is outside 0 to 10s", c.LogFlush))
	}
	c.DrainTimeout = env.Duration("TERROIR_DRAIN_TIMEOUT", 10*time.Second)
	c.TransitRetention = env.Duration("TERROIR_TRANSIT_RETENTION", bus.DefaultTransitRetention)
	if c.TransitRetention < time.Minute || c.TransitRetention > 7*24*time.Hour {
		env.Fail("TERROIR_TRANSIT_RETENTION", fmt.Errorf("%s is outside 1m to 168h: replies must outlive a request's wait, and prompts must not rest for long", c.TransitRetention))
	}
	c.Linger = env.Wait("TERROIR_KAFKA_LINGER", 0)
	c.SideLinger = env.Wait("TERROIR_KAFKA_SIDE_LINGER", bus.DefaultSideLinger)
	for k, v := range map[string]time.Duration{"TERROIR_KAFKA_LINGER": c.Linger, "TERROIR_KAFKA_SIDE_LINGER": c.SideLinger} {
		if v > time.Second {
			env.Fail(k, fmt.Errorf("%s is outside 0 to 1s", v))
		}
	}
	c.SessionTimeout = env.Duration("TERROIR_KAFKA_SESSION_TIMEOUT", 45*time.Second)
	if c.SessionTimeout < time.Second || c.SessionTimeout > 5*time.Minute {
		env.Fail("TERROIR_KAFKA_SESSION_TIMEOUT", fmt.Errorf("%s is outside 1s to 5m", c.SessionTimeout))
	}
	lanes, err := bus.ParseLanes(env.String("TERROIR_LANES", "realtime,batch"))
	if err != nil {
		env.Fail("TERROIR_LANES", err)
	}
	c.Lanes = lanes
	c.CPUPriority = env.OneOf("TERROIR_CPU_PRIORITY", "normal", "normal", "low", "idle")
	c.InstanceID = env.String("TERROIR_INSTANCE_ID", defaultInstanceID(service))
	return c
}

func defaultInstanceID(service string) string {
	host, _ := os.Hostname()
	if host == "" {
		host = "host"
	}
	return service + "-" + host + "-" + strconv.Itoa(os.Getpid())
}

// Daemon is a started service: its shared dependencies and its parts.
type Daemon struct {
	Config   Config
	Log      *zap.Logger
	Registry *prometheus.Registry
	Bus      *bus.Bus
	// Redis has a client per geography when Config.UseRedis is set.
	Redis   map[string]*redis.Client
	Control *control.State
	// ControlPublisher writes control changes with read-your-writes.
	ControlPublisher *control.Publisher

	admin   *admin.Server
	control map[string]*bus.Table
	parts   []part
}

type part struct {
	name string
	run  func(context.Context) error
}

// Start builds the daemon: logger, admin server (answering /healthz at
// once, /readyz 503 until Run), bus with topics provisioned, Redis
// clients and the control-plane view.
func Start(ctx context.Context, cfg Config) (*Daemon, error) {
	log, err := logging.NewBuffered(cfg.Service, cfg.LogFormat, cfg.LogLevel, cfg.LogFlush)
	if err != nil {
		return nil, err
	}
	if cfg.CPUPriority != "" && cfg.CPUPriority != "normal" {
		if err := lowerPriority(cfg.CPUPriority == "idle"); err != nil {
			return nil, fmt.Errorf("TERROIR_CPU_PRIORITY: %w", err)
		}
	}
	d := &Daemon{Config: cfg, Log: log, Registry: prometheus.NewRegistry(), Redis: map[string]*redis.Client{}}
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "terroir_build_info", Help: "Always 1; labels name the service and instance.",
		ConstLabels: prometheus.Labels{"service": cfg.Service, "instance": cfg.InstanceID}})
	info.Set(1)
	d.Registry.MustRegister(info, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if d.admin, err = admin.Listen(cfg.AdminAddr, d.Registry, admin.Options{Pprof: cfg.Pprof}); err != nil {
		return nil, err
	}
	if err := d.connect(ctx); err != nil {
		d.close()
		return nil, err
	}
	log.Info("started", zap.Strings("geos", cfg.Geos), zap.String("cpu_priority", cfg.CPUPriority), zap.String("admin", d.admin.Addr()), zap.String("instance", cfg.InstanceID))
	return d, nil
}

func (d *Daemon) connect(ctx context.Context) error {
	cfg := d.Config
	wrapper, err := keys.LoadKeyFile(cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("TERROIR_KEY_FILE: %w", err)
	}
	defs, err := bus.LoadTopicDefs(cfg.TopicsFile)
	if err != nil {
		return fmt.Errorf("TERROIR_TOPICS_FILE: %w", err)
	}
	defs.TransitRetention = cfg.TransitRetention
	d.Bus, err = bus.New(ctx, bus.Config{
		Namespace: cfg.Namespace, Brokers: cfg.Brokers, Security: cfg.KafkaSecurity, InstanceID: cfg.InstanceID,
		Topics: defs, Replication: int16(cfg.Replication), KeyWrapper: wrapper,
		KeyOptions: []keys.Option{
			keys.WithAdmission(d.admitKey),
			keys.WithRotation(uint64(cfg.KeyRotateSeals), cfg.KeyRotateAge),
		},
		Linger: cfg.Linger, SideLinger: cfg.SideLinger, SessionTimeout: cfg.SessionTimeout,
		Logger: d.Log, Registerer: d.Registry,
	})
	if err != nil {
		return err
	}
	d.Control = control.NewState(d.Log)
	d.control = map[string]*bus.Table{}
	for _, g := range cfg.Geos {
		t, err := d.Bus.NewTable(g, bus.StreamControl, d.Control.Apply)
		if err != nil {
			return err
		}
		d.control[g] = t
		if cfg.UseRedis {
			d.Redis[g] = redis.NewClient(cfg.Redis[g])
		}
	}
	d.ControlPublisher = control.NewPublisher(d.Bus, d.control)
	return nil
}

// admitKey lets a data key be made only for a resource the control plane
// knows; one this view has not seen yet is looked for again after
// catching up with the control topics.
func (d *Daemon) admitKey(ctx context.Context, resource string) error {
	if _, ok := d.Control.Resource(resource); ok {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, t := range d.control {
		if err := t.Sync(sctx); err != nil {
			return fmt.Errorf("checking that resource %s exists: %w", resource, err)
		}
	}
	if _, ok := d.Control.Resource(resource); ok {
		return nil
	}
	return fmt.Errorf("resource %s: %w", resource, keys.ErrNoResource)
}

// Go adds a long-running part, started by Run. A part runs until its
// context ends, then drains and returns; an error from a part stops the
// service.
func (d *Daemon) Go(name string, run func(ctx context.Context) error) {
	d.parts = append(d.parts, part{name, run})
}

// Ready reports whether the service can do its work: every geography's
// Kafka answers, data keys and control plane are caught up, and Redis
// answers.
func (d *Daemon) Ready(ctx context.Context) error {
	if err := d.Bus.Ready(ctx); err != nil {
		return err
	}
	for _, t := range d.control {
		if err := t.Sync(ctx); err != nil {
			return err
		}
	}
	for g, r := range d.Redis {
		if err := r.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("redis of %s: %w", g, err)
		}
	}
	return nil
}

// Run runs the parts until ctx ends or a part fails, then drains and
// closes everything. It returns nil after a clean shutdown.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.close()
	partsCtx, stopParts := context.WithCancel(context.WithoutCancel(ctx))
	defer stopParts()
	failed := make(chan error, len(d.parts))
	var wg sync.WaitGroup
	for _, p := range d.parts {
		wg.Go(func() {
			if err := p.run(partsCtx); err != nil {
				failed <- fmt.Errorf("%s: %w", p.name, err)
			}
		})
	}
	d.admin.SetReady(d.Ready)

	var runErr error
	select {
	case <-ctx.Done():
		d.Log.Info("stopping: draining", zap.Duration("drain_timeout", d.Config.DrainTimeout))
	case runErr = <-failed:
		d.Log.Error("part failed, stopping", zap.Error(runErr))
	}
	d.admin.Drain()
	stopParts()
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(d.Config.DrainTimeout + 5*time.Second):
		runErr = errors.Join(runErr, errors.New("parts did not drain in time"))
	}
	for len(failed) > 0 {
		runErr = errors.Join(runErr, <-failed)
	}
	if runErr == nil {
		d.Log.Info("stopped cleanly")
	}
	return runErr
}

func (d *Daemon) close() {
	for _, t := range d.control {
		t.Close()
	}
	if d.Bus != nil {
		d.Bus.Close()
	}
	for _, r := range d.Redis {
		_ = r.Close()
	}
	if d.admin != nil {
		_ = d.admin.Close()
	}
	_ = d.Log.Sync()
}
