// Command finetuning runs fine-tuning jobs and keeps the registry of
// fine-tuned models, evaluated for safety before deployment, stored
// encrypted in the resource's home geography.
//
// Configuration is read from TERROIR_* environment variables (see the
// repository README); its admin endpoints listen on 127.0.0.1:9105 by
// default, and it keeps its state in the Redis of each geography.
package main

import (
	"context"
	"os"

	"github.com/terroir-ai/terroir/pkg/daemon"
)

const (
	service          = "finetuning"
	defaultAdminAddr = "127.0.0.1:9105"
	useRedis         = true
)

func main() { os.Exit(daemon.Main(service, run)) }

func run(ctx context.Context, getenv func(string) string) error {
	return daemon.Serve(ctx, getenv, service, defaultAdminAddr, useRedis)
}
