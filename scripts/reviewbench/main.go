// Command reviewbench measures the review service's abuse-monitoring store
// (services/review/store): how many abuse-log records a second Store.Run
// indexes, and how long Store.Lookup takes to find, read back, open and
// join one request's record with a million records stored. It prints one
// table with the targets and whether each is met.
//
// It starts an in-process kfake cluster and a redis-server of its own,
// publishes -records sealed abuse records (a prompt part and an output part
// per request, spread over -resources resources) to one geography's abuse
// log, then runs the store over that backlog, then looks up random
// requests. It exits non-zero only when a measurement could not be made or
// records were lost, never because a target was missed.
//
//	cd scripts && go run ./reviewbench [-records 1000000] [-lookups 10000]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/terroir-ai/terroir/scripts/internal/bench"
)

func main() { bench.Main("reviewbench", run) }

// Targets.
const (
	targetIngest   = 5000                  // records indexed per second
	targetLookup99 = 20 * time.Millisecond // lookup p99
)

// config holds the command-line settings.
type config struct {
	records     int
	resources   int
	contentSize int
	lookups     int
	misses      int
	concurrency int
	inflight    int
	redisServer string
	timeout     time.Duration
	cpuProfile  string
	verbose     bool
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("reviewbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.records, "records", 1_000_000, "abuse-log records published and indexed (two per request: prompt and output part)")
	fs.IntVar(&c.resources, "resources", 100, "resources the requests are spread over")
	fs.IntVar(&c.contentSize, "content", 1024, "size in bytes of each part's prompt or output JSON")
	fs.IntVar(&c.lookups, "lookups", 10_000, "lookups of random stored requests measured")
	fs.IntVar(&c.misses, "misses", 1_000, "lookups of unknown request IDs measured")
	fs.IntVar(&c.concurrency, "concurrency", 1, "concurrent lookups")
	fs.IntVar(&c.inflight, "inflight", 8192, "records being published at once")
	fs.StringVar(&c.redisServer, "redis-server", "redis-server", "redis-server executable")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Minute, "bound on each phase (publish, ingest)")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the lookup phase to this file")
	fs.BoolVar(&c.verbose, "v", false, "log the bus's and the store's debug output to stderr")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var errs []error
	if c.records < 2 {
		errs = append(errs, errors.New("-records must be at least 2"))
	}
	if c.resources <= 0 {
		errs = append(errs, errors.New("-resources must be positive"))
	}
	if c.contentSize < 64 {
		errs = append(errs, errors.New("-content must be at least 64 bytes"))
	}
	if c.lookups <= 0 {
		errs = append(errs, errors.New("-lookups must be positive"))
	}
	if c.misses < 0 {
		errs = append(errs, errors.New("-misses must not be negative"))
	}
	if c.concurrency <= 0 {
		errs = append(errs, errors.New("-concurrency must be positive"))
	}
	if c.inflight <= 0 {
		errs = append(errs, errors.New("-inflight must be positive"))
	}
	if c.timeout <= 0 {
		errs = append(errs, errors.New("-timeout must be positive"))
	}
	return c, errors.Join(errs...)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	e, err := newEnv(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer e.Close()

	var rows []bench.Row
	var errs []error
	fmt.Fprintf(stderr, "reviewbench: publishing %d records (%d requests)\n", e.records(), e.requests())
	r, err := e.publishAll(ctx)
	rows = append(rows, r)
	if err != nil {
		errs = append(errs, fmt.Errorf("publishing: %w", err))
	}
	if err == nil && ctx.Err() == nil {
		fmt.Fprintln(stderr, "reviewbench: indexing the backlog with Store.Run")
		r, err := e.ingest(ctx)
		rows = append(rows, r...)
		if err != nil {
			errs = append(errs, fmt.Errorf("ingest: %w", err))
		}
		if err == nil && ctx.Err() == nil {
			fmt.Fprintln(stderr, "reviewbench: looking up random requests")
			r, err := e.lookups(ctx)
			rows = append(rows, r...)
			if err != nil {
				errs = append(errs, fmt.Errorf("lookup: %w", err))
			}
		}
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, fmt.Errorf("interrupted: %w", err))
	}

	if err := bench.PrintReport(stdout, e.facts(), rows); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
