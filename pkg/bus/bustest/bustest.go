// Package bustest gives tests a Kafka cluster and buses on it. By default
// the cluster is franz-go's kfake, in process, spoken to over the wire.
// TERROIR_KAFKA_BROKERS points the same tests at a running cluster;
// TERROIR_TEST_DOCKER=1 starts Apache Kafka in a container through
// testcontainers-go (when a Docker engine is present). Either way every
// test gets its own topic namespace, so tests never see each other's data.
package bustest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tckafka "github.com/testcontainers/testcontainers-go/modules/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/keys"
)

// KafkaImage is the image started when TERROIR_TEST_DOCKER=1.
const KafkaImage = "confluentinc/confluent-local:7.5.0"

// Cluster is the Kafka a test talks to.
type Cluster struct {
	Brokers []string
	// Fake is the in-process cluster, or nil on a real broker. Tests of
	// broker misbehaviour (kfake's ControlKey) need it.
	Fake *kfake.Cluster
	// KeyFile is a dev keyring with keys for eu and us.
	KeyFile string
}

// New returns the cluster for t, closed when t ends.
func New(t testing.TB, opts ...kfake.Opt) *Cluster {
	t.Helper()
	c := &Cluster{KeyFile: filepath.Join(t.TempDir(), "keyring.json")}
	if err := keys.EnsureKeyFile(c.KeyFile, []string{"eu", "us"}); err != nil {
		t.Fatal(err)
	}
	switch {
	case os.Getenv("TERROIR_KAFKA_BROKERS") != "":
		c.Brokers = strings.Split(os.Getenv("TERROIR_KAFKA_BROKERS"), ",")
	case os.Getenv("TERROIR_TEST_DOCKER") == "1":
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		kc, err := tckafka.Run(ctx, KafkaImage, tckafka.WithClusterID("terroir-test"))
		if err != nil {
			t.Fatalf("starting Kafka in a container (TERROIR_TEST_DOCKER=1): %v", err)
		}
		t.Cleanup(func() { _ = testcontainers.TerminateContainer(kc) })
		c.Brokers, err = kc.Brokers(ctx)
		if err != nil {
			t.Fatal(err)
		}
	default:
		fake, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(fake.Close)
		c.Fake = fake
		c.Brokers = fake.ListenAddrs()
	}
	return c
}

// Namespace returns a topic namespace unique to this call.
func Namespace() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

// Options adjust a test bus.
type Options struct {
	Geos       []string // default eu and us
	Namespace  string   // default a fresh one per bus; share it to talk
	InstanceID string   // default a fresh one
	Logger     *zap.Logger
	// ClientOpts are added to every franz-go client of the bus (hooks
	// that let a test see what a consumer polled, say).
	ClientOpts []kgo.Opt
	KeyOptions []keys.Option // data-key admission and rotation
}

// Bus returns a bus on the cluster with topics provisioned from the
// repository's deployments/topics.yaml, closed when t ends.
func (c *Cluster) Bus(t testing.TB, o Options) *bus.Bus {
	t.Helper()
	if len(o.Geos) == 0 {
		o.Geos = []string{"eu", "us"}
	}
	if o.Namespace == "" {
		o.Namespace = Namespace()
	}
	if o.InstanceID == "" {
		o.InstanceID = "test-" + Namespace()
	}
	if o.Logger == nil {
		o.Logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	}
	defs, err := bus.LoadTopicDefs(TopicsFile(t))
	if err != nil {
		t.Fatal(err)
	}
	w, err := keys.LoadKeyFile(c.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	brokers := map[string][]string{}
	for _, g := range o.Geos {
		brokers[g] = c.Brokers
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.New(ctx, bus.Config{
		Namespace: o.Namespace, Brokers: brokers, InstanceID: o.InstanceID,
		Topics: defs, KeyWrapper: w, KeyOptions: o.KeyOptions, Logger: o.Logger, ClientOpts: o.ClientOpts,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	return b
}

// TopicsFile finds deployments/topics.yaml by walking up from the working
// directory to the repository root.
func TopicsFile(t testing.TB) string {
	t.Helper()
	return RepoFile(t, "deployments/topics.yaml")
}

// RepoFile finds a file of the repository, by its slash-separated path
// from the root, walking up from the working directory.
func RepoFile(t testing.TB, rel string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("%s not found above the working directory", rel)
		}
		dir = parent
	}
}

// TopicConfigs describes topic's configs as the broker holds them.
func TopicConfigs(t testing.TB, adm *kadm.Client, topic string) map[string]string {
	t.Helper()
	rc, err := adm.DescribeTopicConfigs(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := rc.On(topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range cfg.Configs {
		out[c.Key] = c.MaybeValue()
	}
	return out
}

// NamespaceRecords reads every record of every topic of namespace, from
// the start to the end each had when called, with a client of its own:
// what an outsider with access to the brokers could read.
func NamespaceRecords(t testing.TB, brokers []string, namespace string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	adm := kadm.NewClient(admin)
	td, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var topics []string
	for name := range td {
		if strings.HasPrefix(name, namespace+".") {
			topics = append(topics, name)
		}
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		t.Fatal(err)
	}
	want := int64(0)
	ends.Each(func(o kadm.ListedOffset) { want += o.Offset })
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	for int64(len(out)) < want {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", len(out), want)
		}
		out = append(out, f.Records()...)
	}
	return out
}
