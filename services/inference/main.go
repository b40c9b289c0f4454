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
	"time"

	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/pkg/daemon"
	"github.com/terroir-ai/terroir/services/inference/builtin"
	"github.com/terroir-ai/terroir/services/inference/worker"
)

const (
	service          = "inference"
	defaultAdminAddr = "127.0.0.1:9103"
	useRedis         = false
)

func main() { os.Exit(daemon.Main(service, run)) }

func run(ctx context.Context, getenv func(string) string) error {
	env := config.New(getenv)
	common := daemon.LoadConfig(env, service, defaultAdminAddr)
	catalogFile := env.String("TERROIR_CATALOG_FILE", "deployments/catalog.yaml")
	tpm := env.Int("TERROIR_INFERENCE_TOKENS_PER_MINUTE", 600_000, 1, 1<<40)
	timeout := env.Duration("TERROIR_INFERENCE_TIMEOUT", 120*time.Second)
	concurrency := env.Int("TERROIR_INFERENCE_CONCURRENCY", 512, 1, 100_000)
	if err := env.Err(); err != nil {
		return err
	}
	cat, err := catalog.Load(catalogFile)
	if err != nil {
		return err
	}
	d, err := daemon.Start(ctx, common)
	if err != nil {
		return err
	}
	model, err := builtin.Load()
	if err != nil {
		return err
	}
	// Upstream keys come from the variables the catalog names; they are
	// never logged.
	upstreams, err := worker.NewUpstreams(cat, getenv, nil, d.Log)
	if err != nil {
		return err
	}
	backends := map[string]worker.Backend{}
	for _, m := range cat.Models {
		if m.Backend.Builtin {
			backends[m.ID] = &worker.Builtin{Model: model}
		} else {
			backends[m.ID] = upstreams[m.ID]
		}
	}
	w, err := worker.New(worker.Config{Bus: d.Bus, Catalog: cat, Backends: backends, Geos: common.Geos, Instance: common.InstanceID,
		TokensPerMinute: int64(tpm), Timeout: timeout, Concurrency: concurrency, Lanes: common.Lanes, Log: d.Log})
	if err != nil {
		return err
	}
	d.Go("worker", w.Run)
	return d.Run(ctx)
}
