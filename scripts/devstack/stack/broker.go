package stack

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Broker is the embedded single-node Kafka-protocol broker of the dev stack.
type Broker struct {
	cluster *kfake.Cluster
	addr    string
}

// StartBroker starts a single kfake broker listening on addr (host:port; port
// 0 picks a free port) that keeps its topics, records and committed offsets
// in dataDir, so they survive a restart. Topics are never created
// automatically: services provision their own. Warnings and errors of the
// broker are written to out as lines prefixed "kafka".
func StartBroker(addr, dataDir string, out *Output) (*Broker, error) {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("parsing Kafka address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("parsing Kafka port %q: %w", portStr, err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating Kafka data directory: %w", err)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		// kfake always asks for 127.0.0.1:<port>; listen on the address
		// asked for instead, which is loopback unless the -kafka flag
		// says otherwise.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, addr)
		}),
		kfake.DataDir(dataDir),
		kfake.ClusterID("terroir-dev"),
	}
	if out != nil {
		opts = append(opts, kfake.WithLogger(brokerLogger{out: out}))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("starting Kafka broker on %s: %w", addr, err)
	}
	addrs := c.ListenAddrs()
	if len(addrs) != 1 {
		c.Close()
		return nil, fmt.Errorf("starting Kafka broker on %s: listening on %d addresses, want 1", addr, len(addrs))
	}
	return &Broker{cluster: c, addr: addrs[0]}, nil
}

// Addr returns the host:port the broker listens on.
func (b *Broker) Addr() string { return b.addr }

// Close stops the broker and writes its state to the data directory. It is
// idempotent.
func (b *Broker) Close() { b.cluster.Close() }

// brokerLogger forwards kfake's warnings and errors; its info and debug
// output is per request and would drown the services' lines.
type brokerLogger struct{ out *Output }

func (l brokerLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	if level > kfake.LogLevelWarn || level == kfake.LogLevelNone {
		return
	}
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	l.out.Printf("kafka", "%s %s", level, msg)
}
