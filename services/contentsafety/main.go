// Command contentsafety filters every prompt and every output:
// harmful-content classifiers, jailbreak detection, custom blocklists,
// applied by each deployment's content-filter policy. It approves or blocks
// requests and annotates replies, and emits a safety signal per request
// (never text).
//
// Configuration is read from TERROIR_* environment variables (see the
// repository README); its admin endpoints listen on 127.0.0.1:9102 by
// default, and it keeps no state of its own in Redis.
package main

import (
	"context"
	"os"

	"github.com/terroir-ai/terroir/pkg/daemon"
)

const (
	service          = "contentsafety"
	defaultAdminAddr = "127.0.0.1:9102"
	useRedis         = false
)

func main() { os.Exit(daemon.Main(service, run)) }

func run(ctx context.Context, getenv func(string) string) error {
	return daemon.Serve(ctx, getenv, service, defaultAdminAddr, useRedis)
}
