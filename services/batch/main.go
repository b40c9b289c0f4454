// Command batch runs Files-backed Batch API jobs and file drops: it splits
// input files into requests, collects their replies and writes output and
// error files in the resource's home geography.
//
// Configuration is read from TERROIR_* environment variables (see the
// repository README); its admin endpoints listen on 127.0.0.1:9104 by
// default, and it keeps its state in the Redis of each geography.
package main

import (
	"context"
	"os"

	"github.com/terroir-ai/terroir/pkg/daemon"
)

const (
	service          = "batch"
	defaultAdminAddr = "127.0.0.1:9104"
	useRedis         = true
)

func main() { os.Exit(daemon.Main(service, run)) }

func run(ctx context.Context, getenv func(string) string) error {
	return daemon.Serve(ctx, getenv, service, defaultAdminAddr, useRedis)
}
