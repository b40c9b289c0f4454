package bus_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/keys"
)

// A test that must kill or signal a consumer the way an orchestrator does
// runs it in a child process: the test binary itself, started again with
// BUSTEST_CHILD naming what the child does and the rest of its settings
// in the variables below.
const (
	envChild          = "BUSTEST_CHILD"
	envBrokers        = "BUSTEST_BROKERS"
	envNamespace      = "BUSTEST_NAMESPACE"
	envKeyFile        = "BUSTEST_KEY_FILE"
	envTopicsFile     = "BUSTEST_TOPICS_FILE"
	envRedisAddr      = "BUSTEST_REDIS_ADDR"
	envGroup          = "BUSTEST_GROUP"
	envSessionTimeout = "BUSTEST_SESSION_TIMEOUT"
)

// Child modes.
const (
	// childKill consumes without ever committing, applying applyOnce,
	// until it is killed.
	childKill = "kill"
	// childDrain consumes with the default commit interval, applying
	// markSeen, until SIGTERM; it exits 0 after a clean drain.
	childDrain = "drain"
)

// Redis keys written by the handlers.
const (
	keyProcessed   = "processed"   // set of request IDs whose effect was applied
	keyTotal       = "total"       // sum of the applied effects
	keyInvocations = "invocations" // handler calls, redeliveries included
	keySeen        = "seen"        // set of request IDs handled by anyone
	keyChildCount  = "handled:child"
	keyParentCount = "handled:parent"
)

// effectAmount is what applyOnce adds to total per request.
const effectAmount = 7

// applyOnceLua adds the amount only for a request ID not seen before, in
// one atomic step, so a redelivered record has no second effect.
const applyOnceLua = `
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
	redis.call('INCRBY', KEYS[2], ARGV[2])
	return 1
end
return 0`

func TestMain(m *testing.M) {
	if mode := os.Getenv(envChild); mode != "" {
		if err := runChild(mode); err != nil {
			fmt.Fprintf(os.Stderr, "child %s: %v\n", mode, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild is the body of a child process: a consumer of the eu requests
// stream on the parent's cluster, namespace and keyring.
func runChild(mode string) error {
	// First of all: the parent signals once records flow, and SIGTERM's
	// default action would end the process without a drain.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	defs, err := bus.LoadTopicDefs(os.Getenv(envTopicsFile))
	if err != nil {
		return err
	}
	w, err := keys.LoadKeyFile(os.Getenv(envKeyFile))
	if err != nil {
		return err
	}
	var opts []kgo.Opt
	if v := os.Getenv(envSessionTimeout); v != "" {
		st, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("parsing %s: %w", envSessionTimeout, err)
		}
		// A killed child never leaves its group: the survivors get its
		// partitions once its session expires.
		opts = append(opts, kgo.SessionTimeout(st), kgo.HeartbeatInterval(st/5))
	}
	logger := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.Lock(os.Stderr), zap.WarnLevel))
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b, err := bus.New(startCtx, bus.Config{
		Namespace:  os.Getenv(envNamespace),
		Brokers:    map[string][]string{"eu": strings.Split(os.Getenv(envBrokers), ",")},
		InstanceID: "child-" + mode + "-" + strconv.Itoa(os.Getpid()),
		Topics:     defs, KeyWrapper: w, Logger: logger, ClientOpts: opts,
	})
	if err != nil {
		return err
	}
	defer b.Close()
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv(envRedisAddr)})
	defer rdb.Close()

	cfg := bus.ConsumerConfig{Group: os.Getenv(envGroup), Streams: []string{bus.StreamRequests}}
	switch mode {
	case childKill:
		cfg.CommitInterval = time.Hour // nothing is committed before the kill
		cfg.Handler = applyOnce(rdb)
	case childDrain:
		cfg.Handler = markSeen(rdb, keyChildCount)
	default:
		return fmt.Errorf("unknown child mode %q", mode)
	}
	c, err := b.NewConsumer(cfg)
	if err != nil {
		return err
	}
	return c.Run(ctx)
}

// applyOnce is a handler whose effect is idempotent by request ID: it adds
// effectAmount to total once per request ID, however often the record is
// delivered. Invocations counts every call.
func applyOnce(rdb *redis.Client) bus.Handler {
	script := redis.NewScript(applyOnceLua)
	return func(ctx context.Context, d *bus.Delivery) error {
		var req events.InferenceRequest
		if err := d.Decode(ctx, &req); err != nil {
			return err
		}
		if err := rdb.Incr(ctx, keyInvocations).Err(); err != nil {
			return fmt.Errorf("counting the invocation for %s: %w", req.RequestID, err)
		}
		if err := script.Run(ctx, rdb, []string{keyProcessed, keyTotal}, req.RequestID, effectAmount).Err(); err != nil {
			return fmt.Errorf("applying the effect of %s: %w", req.RequestID, err)
		}
		return nil
	}
}

// markSeen is a handler that takes a moment per record, as real work
// does, then adds the request ID to seen and counts the call under counter.
func markSeen(rdb *redis.Client, counter string) bus.Handler {
	return func(ctx context.Context, d *bus.Delivery) error {
		var req events.InferenceRequest
		if err := d.Decode(ctx, &req); err != nil {
			return err
		}
		time.Sleep(2 * time.Millisecond) // emulated work, not a wait for a condition
		if _, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.SAdd(ctx, keySeen, req.RequestID)
			p.Incr(ctx, counter)
			return nil
		}); err != nil {
			return fmt.Errorf("recording %s: %w", req.RequestID, err)
		}
		return nil
	}
}

// child is a consumer running in a child process.
type child struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer // stdout and stderr; read through output
	done chan error    // Wait's result, once
	err  error
	exit bool
}

// startChild runs the test binary as a consumer in mode, in group, on the
// namespace ns of cluster c (already provisioned) with Redis at redisAddr.
// The child is killed when t ends if it is still running.
func startChild(t *testing.T, mode string, c *bustest.Cluster, ns, redisAddr, group string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	env := []string{
		envChild + "=" + mode,
		envBrokers + "=" + strings.Join(c.Brokers, ","),
		envNamespace + "=" + ns,
		envKeyFile + "=" + c.KeyFile,
		envTopicsFile + "=" + bustest.TopicsFile(t),
		envRedisAddr + "=" + redisAddr,
		envGroup + "=" + group,
	}
	if c.Fake != nil {
		// The in-process cluster is started with a lower minimum.
		env = append(env, envSessionTimeout+"=1s")
	} else {
		env = append(env, envSessionTimeout+"=6s") // Kafka's default minimum
	}
	cmd.Env = append(os.Environ(), env...)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the %s child: %v", mode, err)
	}
	ch := &child{cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { ch.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if !ch.exited(0) {
			_ = cmd.Process.Kill()
			ch.exited(10 * time.Second)
		}
	})
	return ch
}

// exited reports whether the child has exited, waiting up to within.
func (ch *child) exited(within time.Duration) bool {
	if ch.exit {
		return true
	}
	select {
	case ch.err = <-ch.done:
		ch.exit = true
		return true
	default:
	}
	if within <= 0 {
		return false
	}
	tm := time.NewTimer(within)
	defer tm.Stop()
	select {
	case ch.err = <-ch.done:
		ch.exit = true
		return true
	case <-tm.C:
		return false
	}
}

// output returns what the child wrote, killing it first if it still runs
// (its output is being written until it exits).
func (ch *child) output() string {
	if !ch.exited(0) {
		_ = ch.cmd.Process.Kill()
		ch.exited(10 * time.Second)
	}
	return ch.out.String()
}

// waitFor polls cond like waitFor, failing at once with the child's output
// if the child exits meanwhile.
func (ch *child) waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	waitFor(t, within, what, func() bool {
		if ch.exited(0) {
			t.Fatalf("child exited (%v) while waiting for %s; its output:\n%s", ch.err, what, ch.output())
		}
		return cond()
	})
}

// exitCode returns the exit status of an exited child, or -1 when it was
// ended by a signal.
func (ch *child) exitCode() int {
	var ee *exec.ExitError
	if errors.As(ch.err, &ee) {
		return ee.ExitCode()
	}
	if ch.err != nil {
		return -1
	}
	return 0
}
