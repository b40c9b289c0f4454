// Command busbench measures Terroir's Kafka layer (pkg/bus): latency and
// throughput of sealed records from producer to consumer group, the round
// trip of request/reply under an open-loop load next to the same round trip
// on plain franz-go, and the cost of sealing and opening a payload; and the
// filtered request path on top of it (ingress, content safety and
// inference as processes): the latency it adds over the model at fixed
// rates, and the highest rate it sustains. It prints one table, with the
// targets where there are some.
//
// By default it runs against an in-process kfake cluster; -brokers points it
// at a running Kafka instead (its topics live under a fresh namespace and
// are deleted at the end). It exits non-zero only when a measurement could
// not be made or requests failed, never because a target was missed.
//
//	cd scripts && go run ./busbench [-duration 10s] [-rate 1000] [-records 20000]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/terroir-ai/terroir/scripts/internal/bench"
)

func main() { bench.Main("busbench", run) }

// config holds the command-line settings.
type config struct {
	brokers     string
	replication int
	records     int
	publishers  int
	bodyBytes   int
	rate        int
	duration    time.Duration
	warmup      time.Duration
	timeout     time.Duration
	only        map[string]bool
	verbose     bool
	// The request path: rates measured for pathDuration each, then the
	// rates probed for the highest sustained one.
	pathRates    []int
	pathDuration time.Duration
	pathProbe    []int
}

// measurements names, in the order they run, what -only can select.
func measurements() []string { return []string{"pubsub", "reqreply", "plain", "crypto", "path"} }

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	var only string
	parts := measurements()
	fs := flag.NewFlagSet("busbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.brokers, "brokers", "", "comma-separated Kafka bootstrap servers; empty starts an in-process kfake cluster")
	fs.IntVar(&c.replication, "replication", 1, "replication factor of the topics created (with -brokers)")
	fs.IntVar(&c.records, "records", 20000, "records published in the produce→consume measurement")
	fs.IntVar(&c.publishers, "publishers", 64, "concurrent publishers in the produce→consume measurement")
	fs.IntVar(&c.bodyBytes, "body", 1024, "size in bytes of the request body carried by each record")
	fs.IntVar(&c.rate, "rate", 1000, "requests per second of the open-loop request/reply load")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long each request/reply load runs")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "load run and discarded before each request/reply measurement")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "how long one request may wait for its reply")
	fs.StringVar(&only, "only", strings.Join(parts, ","), "comma-separated measurements to run: "+strings.Join(parts, ", "))
	fs.BoolVar(&c.verbose, "v", false, "log the bus's debug output to stderr")
	var pathRates, pathProbe string
	fs.StringVar(&pathRates, "path-rates", "200,1000", "request rates at which the request path's latency is measured")
	fs.DurationVar(&c.pathDuration, "path-duration", 30*time.Second, "how long each request-path rate runs")
	fs.StringVar(&pathProbe, "path-probe", "500,1000,1500,2000,2500,3000,4000", "rates tried, 10 s each, for the highest the request path sustains")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var errs []error
	var err error
	if c.pathRates, err = parseRates(pathRates); err != nil {
		errs = append(errs, fmt.Errorf("-path-rates: %w", err))
	}
	if c.pathProbe, err = parseRates(pathProbe); err != nil {
		errs = append(errs, fmt.Errorf("-path-probe: %w", err))
	}
	c.only = map[string]bool{}
	for _, p := range strings.Split(only, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		known := false
		for _, k := range parts {
			known = known || k == p
		}
		if !known {
			errs = append(errs, fmt.Errorf("-only: unknown measurement %q", p))
		}
		c.only[p] = true
	}
	if c.records <= 0 {
		errs = append(errs, errors.New("-records must be positive"))
	}
	if c.publishers <= 0 {
		errs = append(errs, errors.New("-publishers must be positive"))
	}
	if c.bodyBytes < 64 {
		errs = append(errs, errors.New("-body must be at least 64 bytes"))
	}
	if c.rate <= 0 || c.rate > 1_000_000 {
		errs = append(errs, errors.New("-rate must be between 1 and 1000000"))
	}
	if c.duration <= 0 {
		errs = append(errs, errors.New("-duration must be positive"))
	}
	if c.warmup < 0 {
		errs = append(errs, errors.New("-warmup must not be negative"))
	}
	if c.timeout <= 0 {
		errs = append(errs, errors.New("-timeout must be positive"))
	}
	if c.replication <= 0 || c.replication > 32767 {
		errs = append(errs, errors.New("-replication must be between 1 and 32767"))
	}
	return c, errors.Join(errs...)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	env, err := newEnv(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer env.Close()

	var rows []bench.Row
	var errs []error
	step := func(name string, f func() ([]bench.Row, error)) {
		if !cfg.only[name] || ctx.Err() != nil {
			return
		}
		fmt.Fprintf(stderr, "busbench: measuring %s\n", name)
		r, err := f()
		rows = append(rows, r...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	step("pubsub", func() ([]bench.Row, error) { return benchPubSub(ctx, env) })
	step("reqreply", func() ([]bench.Row, error) { return benchBusRoundTrip(ctx, env) })
	step("plain", func() ([]bench.Row, error) { return benchPlainRoundTrip(ctx, env) })
	step("crypto", func() ([]bench.Row, error) { return benchCrypto(ctx, env) })
	step("path", func() ([]bench.Row, error) { return benchPath(ctx, env) })
	if err := ctx.Err(); err != nil {
		errs = append(errs, fmt.Errorf("interrupted: %w", err))
	}

	if err := bench.PrintReport(stdout, machineFacts(env), rows); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
