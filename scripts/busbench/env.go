package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/keys"
)

// geo is the one geography the benchmark uses: every measurement stays in
// a single cluster.
const geo = "eu"

// resource is the tenant every benchmark request belongs to.
const resource = "bench-resource"

// env is what every measurement shares: the cluster, the keyring, and two
// buses standing for two services (a front one that publishes and waits for
// replies, a back one that consumes and replies).
type env struct {
	cfg      config
	stderr   io.Writer
	fake     *kfake.Cluster
	brokers  []string
	ns       string
	tmp      string
	keyFile  string
	wrapper  *keys.LocalWrapper
	defs     *bus.TopicDefs
	front    *bus.Bus
	back     *bus.Bus
	log      *zap.Logger
	body     []byte // the request body, a JSON object of cfg.bodyBytes bytes
	result   []byte // the reply body, a JSON object of about the same size
	cleanups []func()
}

func newEnv(ctx context.Context, cfg config, stderr io.Writer) (_ *env, err error) {
	e := &env{cfg: cfg, stderr: stderr}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	e.defs, err = bus.LoadTopicDefs(filepath.Join(root, "deployments", "topics.yaml"))
	if err != nil {
		return nil, err
	}
	e.tmp, err = os.MkdirTemp("", "busbench-")
	if err != nil {
		return nil, fmt.Errorf("creating a temporary directory: %w", err)
	}
	e.cleanups = append(e.cleanups, func() { _ = os.RemoveAll(e.tmp) })
	e.keyFile = filepath.Join(e.tmp, "keyring.json")
	if err := keys.EnsureKeyFile(e.keyFile, []string{geo}); err != nil {
		return nil, fmt.Errorf("creating the dev keyring: %w", err)
	}
	e.wrapper, err = keys.LoadKeyFile(e.keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the dev keyring: %w", err)
	}

	level := zap.WarnLevel
	if cfg.verbose {
		level = zap.DebugLevel
	}
	encCfg := zap.NewDevelopmentEncoderConfig()
	e.log = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(encCfg), zapcore.AddSync(stderr), level))

	if cfg.brokers != "" {
		e.brokers = strings.Split(cfg.brokers, ",")
	} else {
		e.fake, err = kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return nil, fmt.Errorf("starting kfake: %w", err)
		}
		e.cleanups = append(e.cleanups, e.fake.Close)
		e.brokers = e.fake.ListenAddrs()
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	e.ns = "bench" + hex.EncodeToString(b)

	if e.front, err = e.newBus(ctx, "busbench-front-"+e.ns); err != nil {
		return nil, err
	}
	if e.back, err = e.newBus(ctx, "busbench-back-"+e.ns); err != nil {
		return nil, err
	}
	if cfg.brokers != "" {
		// On a shared cluster, leave nothing behind. Runs before the buses
		// close (cleanups run last first).
		e.cleanups = append(e.cleanups, e.deleteTopics)
	}
	e.body = jsonBody(`{"model":"bench","messages":[{"role":"user","content":"`, `"}]}`, cfg.bodyBytes)
	e.result = jsonBody(`{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"`, `"}}]}`, cfg.bodyBytes)
	return e, nil
}

func (e *env) newBus(ctx context.Context, instance string) (*bus.Bus, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	b, err := bus.New(ctx, bus.Config{
		Namespace:   e.ns,
		Brokers:     map[string][]string{geo: e.brokers},
		InstanceID:  instance,
		Topics:      e.defs,
		Replication: int16(e.cfg.replication),
		KeyWrapper:  e.wrapper,
		Logger:      e.log.Named(instance),
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

// deleteTopics removes every topic of this run's namespace.
func (e *env) deleteTopics() {
	adm, err := e.front.Admin(geo)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all, err := adm.ListTopics(ctx)
	if err != nil {
		fmt.Fprintln(e.stderr, "busbench: listing topics to delete:", err)
		return
	}
	var mine []string
	for _, t := range all.Names() {
		if strings.HasPrefix(t, e.ns+".") {
			mine = append(mine, t)
		}
	}
	if len(mine) == 0 {
		return
	}
	resp, err := adm.DeleteTopics(ctx, mine...)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		fmt.Fprintln(e.stderr, "busbench: deleting topics:", err)
	}
}

// createTopic creates a topic for the plain franz-go baseline.
func (e *env) createTopic(ctx context.Context, topic string, partitions int32) error {
	adm, err := e.front.Admin(geo)
	if err != nil {
		return err
	}
	resp, err := adm.CreateTopic(ctx, partitions, int16(e.cfg.replication), nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("creating %s: %w", topic, err)
	}
	return waitTopic(ctx, adm, topic)
}

// waitTopic waits until every partition of a new topic has a leader.
func waitTopic(ctx context.Context, adm *kadm.Client, topic string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err == nil {
			err = ends.Error()
		}
		if err == nil {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", topic, err)
		}
	}
}

// clientOpts are the options of every plain franz-go client.
func (e *env) clientOpts(extra ...kgo.Opt) []kgo.Opt {
	return append([]kgo.Opt{kgo.SeedBrokers(e.brokers...)}, extra...)
}

func (e *env) close() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	e.cleanups = nil
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
func jsonBody(prefix, suffix string, n int) []byte {
	fill := max(n-len(prefix)-len(suffix), 1)
	const words = "the quick brown fox jumps over the lazy dog "
	var sb strings.Builder
	sb.Grow(len(prefix) + fill + len(suffix))
	sb.WriteString(prefix)
	for i := 0; i < fill; i++ {
		sb.WriteByte(words[i%len(words)])
	}
	sb.WriteString(suffix)
	return []byte(sb.String())
}
