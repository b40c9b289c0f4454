// Command ingress is Terroir's REST edge: the OpenAI- and
// Azure-OpenAI-compatible API for apps and the management API for
// operators. It authenticates callers, applies rate limits, publishes
// requests to the bus of the deployment's processing geography and waits
// for their replies.
//
// Configuration is read from TERROIR_* environment variables (see the
// repository README); its admin endpoints listen on 127.0.0.1:9101 by
// default, and it keeps no state of its own in Redis.
package main

import (
	"context"
	"os"

	"github.com/terroir-ai/terroir/pkg/daemon"
)

const (
	service          = "ingress"
	defaultAdminAddr = "127.0.0.1:9101"
	useRedis         = false
)

func main() { os.Exit(daemon.Main(service, run)) }

func run(ctx context.Context, getenv func(string) string) error {
	return daemon.Serve(ctx, getenv, service, defaultAdminAddr, useRedis)
}
