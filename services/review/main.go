// Command review keeps abuse-monitoring records for at most 30 days per
// geography, detects recurring abuse from safety signals, and serves the
// review console where approved reviewers look up flagged requests one at a
// time, every access audited.
//
// Configuration is read from TERROIR_* environment variables (see the
// repository README); its admin endpoints listen on 127.0.0.1:9107 by
// default, and it keeps its state in the Redis of each geography.
package main

import (
	"context"
	"os"

	"github.com/terroir-ai/terroir/pkg/daemon"
)

const (
	service          = "review"
	defaultAdminAddr = "127.0.0.1:9107"
	useRedis         = true
)

func main() { os.Exit(daemon.Main(service, run)) }

func run(ctx context.Context, getenv func(string) string) error {
	return daemon.Serve(ctx, getenv, service, defaultAdminAddr, useRedis)
}
