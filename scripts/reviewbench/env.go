package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/keys"
	"github.com/terroir-ai/terroir/services/review/store"
)

// geo is the one geography measured: a store indexes each geography in its
// own Redis, so one is representative.
const geo = "eu"

// env is what the measurements share: the cluster, Redis, a bus standing
// for the producers of the abuse log (content safety) and one standing for
// the review service, which runs the store.
type env struct {
	cfg      config
	stderr   io.Writer
	log      *zap.Logger
	tmp      string
	fake     *kfake.Cluster
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
	cleanups []func()
}

func newEnv(ctx context.Context, cfg config, stderr io.Writer) (_ *env, err error) {
	e := &env{cfg: cfg, stderr: stderr}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	level := zap.WarnLevel
	if cfg.verbose {
		level = zap.DebugLevel
	}
	e.log = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(stderr), level))

	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	defs, err := bus.LoadTopicDefs(filepath.Join(root, "deployments", "topics.yaml"))
	if err != nil {
		return nil, err
	}
	if e.tmp, err = os.MkdirTemp("", "reviewbench-"); err != nil {
		return nil, fmt.Errorf("creating a temporary directory: %w", err)
	}
	e.cleanups = append(e.cleanups, func() { _ = os.RemoveAll(e.tmp) })
	keyFile := filepath.Join(e.tmp, "keyring.json")
	if err := keys.EnsureKeyFile(keyFile, []string{geo}); err != nil {
		return nil, fmt.Errorf("creating the dev keyring: %w", err)
	}
	wrapper, err := keys.LoadKeyFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the dev keyring: %w", err)
	}

	if err := e.startRedis(ctx); err != nil {
		return nil, err
	}
	if e.fake, err = kfake.NewCluster(kfake.NumBrokers(1)); err != nil {
		return nil, fmt.Errorf("starting kfake: %w", err)
	}
	e.cleanups = append(e.cleanups, e.fake.Close)
	brokers := e.fake.ListenAddrs()

	newBus := func(instance string, reg prometheus.Registerer) (*bus.Bus, error) {
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		b, err := bus.New(ctx, bus.Config{
			Namespace: "terroir", Brokers: map[string][]string{geo: brokers}, InstanceID: instance,
			Topics: defs, KeyWrapper: wrapper, Logger: e.log.Named(instance), Registerer: reg,
		})
		if err != nil {
			return nil, fmt.Errorf("connecting bus %s: %w", instance, err)
		}
		e.cleanups = append(e.cleanups, b.Close)
		if err := b.Ready(ctx); err != nil {
			return nil, fmt.Errorf("bus %s not ready: %w", instance, err)
		}
		return b, nil
	}
	if e.pub, err = newBus("reviewbench-contentsafety", nil); err != nil {
		return nil, err
	}
	e.reg = prometheus.NewRegistry()
	if e.rev, err = newBus("reviewbench-review", e.reg); err != nil {
		return nil, err
	}

	e.state = control.NewState(e.log)
	now := time.Now().UTC()
	for i := range cfg.resources {
		spec, err := json.Marshal(control.Resource{Name: e.resource(i), Location: geo, ContentLogging: true, CreatedAt: now})
		if err != nil {
			return nil, err
		}
		e.state.ApplyChange(events.ControlChange{Kind: events.ControlResource, ID: e.resource(i), Actor: "reviewbench", At: now, Spec: spec})
	}
	e.store, err = store.New(store.Config{Bus: e.rev, Redis: map[string]*redis.Client{geo: e.rdb}, State: e.state, Geos: []string{geo}, Log: e.log})
	if err != nil {
		return nil, err
	}
	e.prompt = jsonBody(`{"messages":[{"role":"user","content":"`, `"}]}`, cfg.contentSize)
	e.output = jsonBody(`{"choices":[{"index":0,"message":{"role":"assistant","content":"`, `"},"finish_reason":"stop"}]}`, cfg.contentSize)
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
		port, err := freePort()
		if err != nil {
			return err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", e.tmp, "--loglevel", "warning")
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
			e.cleanups = append(e.cleanups, func() {
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

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (e *env) close() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	e.cleanups = nil
}

// facts describes where the numbers were measured.
func (e *env) facts() string {
	return fmt.Sprintf("machine: GOMAXPROCS=%d NumCPU=%d cpu=%q %s %s/%s kafka=kfake in process (1 broker) redis-server=%s\n"+
		"load: %d records (%d requests × prompt and output part) of %d-byte content, %d resources, one geography",
		runtime.GOMAXPROCS(0), runtime.NumCPU(), cpuModel(), runtime.Version(), runtime.GOOS, runtime.GOARCH, e.redisVer,
		e.records(), e.requests(), e.cfg.contentSize, e.cfg.resources)
}

// cpuModel reads the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// repoRoot walks up from the working directory to the directory holding
// go.work.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding the repository root: no go.work above the working directory")
		}
		dir = parent
	}
}

// jsonBody returns prefix + filler + suffix, exactly n bytes long when n
// allows it.
func jsonBody(prefix, suffix string, n int) json.RawMessage {
	fill := max(n-len(prefix)-len(suffix), 1)
	const words = "the quick brown fox jumps over the lazy dog "
	var sb strings.Builder
	sb.Grow(len(prefix) + fill + len(suffix))
	sb.WriteString(prefix)
	for i := range fill {
		sb.WriteByte(words[i%len(words)])
	}
	sb.WriteString(suffix)
	return json.RawMessage(sb.String())
}
