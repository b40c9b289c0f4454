package main

import (
	"time"

	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/services/batch/jobs"
	"github.com/terroir-ai/terroir/services/batch/validate"
)

// Config is the batch service's own configuration, beside the shared one.
type Config struct {
	// CatalogFile is the model catalog (TERROIR_CATALOG_FILE, default
	// deployments/catalog.yaml): lines are admitted against it.
	CatalogFile string
	// Jobs tunes the running of batches:
	// TERROIR_BATCH_MAX_IN_FLIGHT (64: lines of one batch sent and not
	// answered; the pacing window moves below it),
	// TERROIR_BATCH_LINE_TIMEOUT (10m: a line unanswered that long is
	// sent again), TERROIR_BATCH_CANCEL_GRACE (30s: how long a cancelled
	// batch waits for lines already sent),
	// TERROIR_BATCH_MAX_ENQUEUED_TOKENS (5000000000: estimated input
	// tokens of a deployment's unfinished batches; a batch past it fails
	// token_limit_exceeded), TERROIR_BATCH_OUTPUT_TTL (720h: the lifetime
	// of output and error files when the batch set no
	// output_expires_after), TERROIR_BATCH_LEASE_TTL (15s: a batch whose
	// instance died resumes on another within it),
	// TERROIR_BATCH_MAX_LINES (100000) and TERROIR_BATCH_MAX_LINE_BYTES
	// (10 MiB) bound an input file.
	Jobs jobs.Config
}

func loadConfig(env *config.Env) Config {
	return Config{
		CatalogFile: env.String("TERROIR_CATALOG_FILE", "deployments/catalog.yaml"),
		Jobs: jobs.Config{
			MaxInFlight:       env.Int("TERROIR_BATCH_MAX_IN_FLIGHT", 256, 1, 4096),
			MaxInFlightBytes:  env.Int("TERROIR_BATCH_MAX_IN_FLIGHT_BYTES", 64<<20, 1<<20, 1<<34),
			QueueTarget:       env.Duration("TERROIR_BATCH_QUEUE_TARGET", 5*time.Millisecond),
			LineTimeout:       env.Duration("TERROIR_BATCH_LINE_TIMEOUT", 10*time.Minute),
			CancelGrace:       env.Duration("TERROIR_BATCH_CANCEL_GRACE", 30*time.Second),
			MaxEnqueuedTokens: int64(env.Int("TERROIR_BATCH_MAX_ENQUEUED_TOKENS", 5_000_000_000, 0, 1<<62)),
			OutputTTL:         env.Duration("TERROIR_BATCH_OUTPUT_TTL", 30*24*time.Hour),
			LeaseTTL:          env.Duration("TERROIR_BATCH_LEASE_TTL", 15*time.Second),
			Limits: validate.Limits{
				MaxLines:     env.Int("TERROIR_BATCH_MAX_LINES", 100_000, 1, 10_000_000),
				MaxLineBytes: env.Int("TERROIR_BATCH_MAX_LINE_BYTES", 10<<20, 1<<10, 1<<30),
			},
		},
	}
}
