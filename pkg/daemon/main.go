package daemon

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/pkg/logging"
)

// RunFunc is a service's run: it wires config, dependencies and parts from
// getenv and blocks until ctx ends and the service has drained.
type RunFunc func(ctx context.Context, getenv func(string) string) error

// Main runs a service's run under a context that SIGTERM and SIGINT end,
// and returns the process exit code.
func Main(service string, run RunFunc) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err := func() error {
		defer logging.Flush() // the service's last lines, before its error or panic
		return run(ctx, os.Getenv)
	}()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", service, err)
		return 1
	}
	return 0
}

// Serve is the whole run of a service that has no parts of its own yet
// beyond the shared ones: load the common config, start, run until ctx
// ends.
func Serve(ctx context.Context, getenv func(string) string, service, defaultAdminAddr string, useRedis bool) error {
	env := config.New(getenv)
	cfg := LoadConfig(env, service, defaultAdminAddr)
	cfg.UseRedis = useRedis
	if err := env.Err(); err != nil {
		return err
	}
	d, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}
