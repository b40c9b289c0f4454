package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/scripts/internal/bench"
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
	*bench.Setup
	cfg     config
	stderr  io.Writer
	fake    *kfake.Cluster
	brokers []string
	ns      string
	front   *bus.Bus
	back    *bus.Bus
	body    []byte // the request body, a JSON object of cfg.bodyBytes bytes
	result  []byte // the reply body, a JSON object of about the same size
}

func newEnv(ctx context.Context, cfg config, stderr io.Writer) (_ *env, err error) {
	setup, err := bench.NewSetup("busbench", []string{geo}, stderr, cfg.verbose)
	if err != nil {
		return nil, err
	}
	e := &env{Setup: setup, cfg: cfg, stderr: stderr}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if cfg.brokers != "" {
		e.brokers = strings.Split(cfg.brokers, ",")
	} else {
		if e.fake, err = e.StartKfake(); err != nil {
			return nil, err
		}
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
		// close (clean-ups run last first).
		e.OnClose(e.deleteTopics)
	}
	e.body = bench.JSONBody(`{"model":"bench","messages":[{"role":"user","content":"`, `"}]}`, cfg.bodyBytes)
	e.result = bench.JSONBody(`{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"`, `"}}]}`, cfg.bodyBytes)
	return e, nil
}

func (e *env) newBus(ctx context.Context, instance string) (*bus.Bus, error) {
	return e.NewBus(ctx, bus.Config{
		Namespace:   e.ns,
		Brokers:     map[string][]string{geo: e.brokers},
		InstanceID:  instance,
		Replication: int16(e.cfg.replication),
	})
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
