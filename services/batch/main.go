// Command batch runs Files-backed Batch API jobs and file drops: it
// validates input files, sends their lines through the filtered path
// behind real-time traffic, collects their answers and writes output and
// error files in the resource's home geography, and turns JSONL files
// dropped into a resource's drop location into batches.
//
// `batch` runs the service; `batch watch -resource R <batch id | drop
// file>` draws a live progress bar of one batch until it ends.
//
// Configuration is read from TERROIR_* environment variables (see the
// repository README); its admin endpoints listen on 127.0.0.1:9104 by
// default, and it keeps its state in the Redis of each geography.
package main

import (
	"context"
	"os"
	"slices"

	"github.com/terroir-ai/terroir/pkg/admit"
	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/pkg/daemon"
	"github.com/terroir-ai/terroir/pkg/filestore"
	"github.com/terroir-ai/terroir/pkg/route"
	"github.com/terroir-ai/terroir/services/batch/drops"
	"github.com/terroir-ai/terroir/services/batch/jobs"
	"github.com/terroir-ai/terroir/services/batch/watch"
)

const (
	service          = "batch"
	defaultAdminAddr = "127.0.0.1:9104"
	useRedis         = true
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "watch" {
		os.Exit(daemon.Main(service+" watch", func(ctx context.Context, getenv func(string) string) error {
			return watch.Run(ctx, getenv, os.Args[2:], os.Stdout)
		}))
	}
	os.Exit(daemon.Main(service, run))
}

func run(ctx context.Context, getenv func(string) string) error {
	env := config.New(getenv)
	common := daemon.LoadConfig(env, service, defaultAdminAddr)
	common.UseRedis = useRedis
	cfg := loadConfig(env)
	blobCfg := blob.LoadConfig(env, common.Geos)
	dropCfg := drops.LoadSettings(env, common.Geos)
	if err := env.Err(); err != nil {
		return err
	}
	cat, err := catalog.Load(cfg.CatalogFile)
	if err != nil {
		return err
	}
	d, err := daemon.Start(ctx, common)
	if err != nil {
		return err
	}
	files, err := filestore.Open(blobCfg, d.Bus, common.Geos, d.Log)
	if err != nil {
		return err
	}
	defer files.Close()

	// Batches: lines admitted as real-time requests are, paced by the
	// capacity inference workers report.
	capacity := route.NewCapacity(nil)
	for _, g := range common.Geos {
		t, err := d.Bus.NewTable(g, bus.StreamCapacity, capacity.Apply)
		if err != nil {
			return err
		}
		defer t.Close()
	}
	jc := cfg.Jobs
	jc.Bus, jc.Redis, jc.State, jc.Files, jc.Instance, jc.Log = d.Bus, d.Redis, d.Control, files, common.InstanceID, d.Log
	jc.Admit = &admit.Admitter{State: d.Control, Catalog: cat, Capacity: capacity, Geos: slices.Sorted(slices.Values(common.Geos))}
	jc.Capacity = capacity.Spare
	jc.Ready = d.Ready
	runner, err := jobs.New(jc)
	if err != nil {
		return err
	}
	d.Go("jobs", runner.Run)

	// File drops.
	for _, g := range common.Geos {
		if dropCfg.Geos[g].Backend == drops.BackendOff {
			continue
		}
		st, err := dropCfg.Open(g, blobCfg)
		if err != nil {
			return err
		}
		if c, ok := st.Store.(interface{ Close() error }); ok {
			defer c.Close()
		}
		w, err := drops.New(drops.Config{Geo: g, Poll: dropCfg.Poll, Settle: dropCfg.Settle, MaxBytes: dropCfg.MaxBytes},
			drops.Deps{Bus: d.Bus, Control: d.Control, Store: st.Store, Whole: st.Whole, Files: files, Log: d.Log})
		if err != nil {
			return err
		}
		d.Go("drops-"+g, w.Run)
	}
	return d.Run(ctx)
}
