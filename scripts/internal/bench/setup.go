package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/keys"
	"github.com/terroir-ai/terroir/scripts/devstack/stack"
)

// Main runs a benchmark command: run gets the command's arguments and
// standard streams and a context that SIGINT or SIGTERM cancels. An error
// other than flag.ErrHelp is printed after the command's name and exits 1.
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Setup is what a benchmark prepares before measuring: a logger, a
// temporary directory holding a dev keyring, the topic definitions, and
// the clean-ups Close runs.
type Setup struct {
	Root    string             // the repository root, the directory holding go.work
	Tmp     string             // a temporary directory, removed by Close
	KeyFile string             // the dev keyring, in Tmp
	Keys    *keys.LocalWrapper // the dev keyring, loaded
	Topics  *bus.TopicDefs     // deployments/topics.yaml
	Log     *zap.Logger        // console logger to stderr: warnings, or debug output when verbose

	cleanups []func()
}

// NewSetup prepares a benchmark named name (the prefix of its temporary
// directory) with a dev keyring for geos.
func NewSetup(name string, geos []string, stderr io.Writer, verbose bool) (_ *Setup, err error) {
	s := &Setup{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	level := zap.WarnLevel
	if verbose {
		level = zap.DebugLevel
	}
	s.Log = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(stderr), level))

	if s.Root, err = stack.FindRoot("."); err != nil {
		return nil, fmt.Errorf("finding the repository root: %w", err)
	}
	if s.Topics, err = bus.LoadTopicDefs(filepath.Join(s.Root, "deployments", "topics.yaml")); err != nil {
		return nil, err
	}
	if s.Tmp, err = os.MkdirTemp("", name+"-"); err != nil {
		return nil, fmt.Errorf("creating a temporary directory: %w", err)
	}
	s.OnClose(func() { _ = os.RemoveAll(s.Tmp) })
	s.KeyFile = filepath.Join(s.Tmp, "keyring.json")
	if err := keys.EnsureKeyFile(s.KeyFile, geos); err != nil {
		return nil, fmt.Errorf("creating the dev keyring: %w", err)
	}
	if s.Keys, err = keys.LoadKeyFile(s.KeyFile); err != nil {
		return nil, fmt.Errorf("loading the dev keyring: %w", err)
	}
	return s, nil
}

// OnClose adds f to what Close runs; the last added runs first.
func (s *Setup) OnClose(f func()) { s.cleanups = append(s.cleanups, f) }

// Close runs the clean-ups, the last added first.
func (s *Setup) Close() {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	s.cleanups = nil
}

// StartKfake starts an in-process Kafka cluster of one broker, closed by
// Close.
func (s *Setup) StartKfake() (*kfake.Cluster, error) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		return nil, fmt.Errorf("starting kfake: %w", err)
	}
	s.OnClose(c.Close)
	return c, nil
}

// NewBus connects a bus with the setup's topics, keyring and logger (named
// after cfg.InstanceID) and waits, for up to a minute, until it is ready.
// Close closes it.
func (s *Setup) NewBus(ctx context.Context, cfg bus.Config) (*bus.Bus, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cfg.Topics, cfg.KeyWrapper, cfg.Logger = s.Topics, s.Keys, s.Log.Named(cfg.InstanceID)
	if cfg.SideLinger == 0 {
		cfg.SideLinger = bus.DefaultSideLinger // as the services run
	}
	b, err := bus.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting bus %s: %w", cfg.InstanceID, err)
	}
	s.OnClose(b.Close)
	if err := b.Ready(ctx); err != nil {
		return nil, fmt.Errorf("bus %s not ready: %w", cfg.InstanceID, err)
	}
	return b, nil
}

// FreeAddr returns a loopback address, host:port, whose TCP port was free
// a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// JSONBody returns prefix + filler + suffix, exactly n bytes long when n
// allows it.
func JSONBody(prefix, suffix string, n int) []byte {
	fill := max(n-len(prefix)-len(suffix), 1)
	const words = "the quick brown fox jumps over the lazy dog "
	var sb strings.Builder
	sb.Grow(len(prefix) + fill + len(suffix))
	sb.WriteString(prefix)
	for i := range fill {
		sb.WriteByte(words[i%len(words)])
	}
	sb.WriteString(suffix)
	return []byte(sb.String())
}
