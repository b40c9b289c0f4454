// Command inference runs the model workers: it answers approved requests
// with the built-in model or an OpenAI-compatible upstream and streams
// completions back. It is stateless: nothing about a request is written to
// disk, cache or log.
//
// Configuration is read from TERROIR_* environment variables (see the
// repository README); its admin endpoints listen on 127.0.0.1:9103 by
// default, and it keeps no state of its own in Redis.
package main

import (
	"context"
	"os"

	"github.com/terroir-ai/terroir/pkg/daemon"
)

const (
	service          = "inference"
	defaultAdminAddr = "127.0.0.1:9103"
	useRedis         = false
)

func main() { os.Exit(daemon.Main(service, run)) }

func run(ctx context.Context, getenv func(string) string) error {
	return daemon.Serve(ctx, getenv, service, defaultAdminAddr, useRedis)
}
