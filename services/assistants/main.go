// Command assistants keeps assistants, threads, messages and runs (the
// Assistants and Responses APIs) in the Redis of each resource's home
// geography, and drives runs through the inference path.
//
// Configuration is read from TERROIR_* environment variables (see the
// repository README); its admin endpoints listen on 127.0.0.1:9106 by
// default, and it keeps its state in the Redis of each geography.
package main

import (
	"context"
	"os"

	"github.com/terroir-ai/terroir/pkg/daemon"
)

const (
	service          = "assistants"
	defaultAdminAddr = "127.0.0.1:9106"
	useRedis         = true
)

func main() { os.Exit(daemon.Main(service, run)) }

func run(ctx context.Context, getenv func(string) string) error {
	return daemon.Serve(ctx, getenv, service, defaultAdminAddr, useRedis)
}
