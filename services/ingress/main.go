// Command ingress is Terroir's REST edge: the OpenAI- and
// Azure-OpenAI-compatible API for apps and the management API for
// operators. It authenticates callers, applies rate limits, publishes
// requests to the bus of the deployment's processing geography and waits
// for their replies.
//
// Configuration is read from TERROIR_* environment variables (see the
// repository README and config.go); the API listens on 127.0.0.1:8080
// (HTTPS when given a certificate) and
// its admin endpoints on 127.0.0.1:9101 by default. It keeps no state of
// its own in Redis: API keys live hashed on the control topic.
package main

import (
	"context"
	"net/http"
	"os"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/daemon"
	"github.com/terroir-ai/terroir/pkg/filestore"
	"github.com/terroir-ai/terroir/pkg/route"
	"github.com/terroir-ai/terroir/services/ingress/api"
	"github.com/terroir-ai/terroir/services/ingress/batches"
	"github.com/terroir-ai/terroir/services/ingress/edge"
	"github.com/terroir-ai/terroir/services/ingress/files"
	"github.com/terroir-ai/terroir/services/ingress/mgmt"
)

const (
	service          = "ingress"
	defaultAdminAddr = "127.0.0.1:9101"
	useRedis         = false
)

func main() { os.Exit(daemon.Main(service, run)) }

func run(ctx context.Context, getenv func(string) string) error {
	env := config.New(getenv)
	common := daemon.LoadConfig(env, service, defaultAdminAddr)
	cfg := loadConfig(env)
	blobCfg := blob.LoadConfig(env, common.Geos)
	if err := env.Err(); err != nil {
		return err
	}
	cat, err := catalog.Load(cfg.CatalogFile)
	if err != nil {
		return err
	}
	serverTLS, err := cfg.serverTLS()
	if err != nil {
		return err
	}
	d, err := daemon.Start(ctx, common)
	if err != nil {
		return err
	}
	if cfg.OperatorToken == "" {
		d.Log.Warn("TERROIR_OPERATOR_TOKEN is not set: the management API refuses every operator call")
	}
	fileStore, err := filestore.Open(blobCfg, d.Bus, common.Geos, d.Log)
	if err != nil {
		return err
	}
	defer fileStore.Close()
	fileAPI, err := files.New(files.Config{Store: fileStore, MaxBytes: cfg.MaxFileBytes,
		MaxBatchBytes: cfg.MaxBatchFileBytes, ReadTimeout: cfg.HTTP.ReadTimeout, Log: d.Log})
	if err != nil {
		return err
	}
	batchAPI, err := batches.New(batches.Config{Bus: d.Bus, Geos: common.Geos, Files: fileStore, MaxBody: cfg.MaxBody,
		MaxEnqueuedTokens: cfg.MaxEnqueuedTokens, Log: d.Log})
	if err != nil {
		return err
	}
	defer batchAPI.Close()
	mgmtAPI, err := mgmt.New(mgmt.Config{
		State: d.Control, Publisher: d.ControlPublisher, Keys: d.Bus.Keys(), Catalog: cat,
		Geos: common.Geos, OperatorToken: cfg.OperatorToken, PublicURL: cfg.PublicURL,
		MaxBody: cfg.MgmtMaxBody, Owned: owned{batchAPI, fileStore}, Log: d.Log,
	})
	if err != nil {
		return err
	}
	capacity := route.NewCapacity(nil)
	requesters := map[string]api.Requester{}
	for _, g := range common.Geos {
		t, err := d.Bus.NewTable(g, bus.StreamCapacity, capacity.Apply)
		if err != nil {
			return err
		}
		defer t.Close()
		rq, err := d.Bus.NewRequester(ctx, g)
		if err != nil {
			return err
		}
		defer rq.Close()
		requesters[g] = rq
	}
	apps, err := api.New(api.Config{State: d.Control, Catalog: cat, Capacity: capacity, Requesters: requesters,
		MaxBody: cfg.MaxBody, Timeout: cfg.RequestTimeout, WriteTimeout: cfg.HTTP.WriteTimeout, Files: fileAPI,
		Batches: batchAPI, Log: d.Log})
	if err != nil {
		return err
	}
	srv, err := edge.Listen(edge.Config{Addr: cfg.HTTPAddr, TLS: serverTLS, Log: d.Log, Limits: cfg.HTTP, Registerer: d.Registry, Routes: map[string]http.Handler{
		"/mgmt/": mgmtAPI.Handler(), "/v1/": apps.Handler(), "/openai/": apps.Handler()}})
	if err != nil {
		return err
	}
	d.Go("files-expiry", fileStore.Run)
	d.Go("http", func(ctx context.Context) error { return srv.Run(ctx, common.DrainTimeout) })
	return d.Run(ctx)
}

// owned deletes what a resource owns outside the control plane, in
// order: its batches (which name its files), then its files.
type owned []mgmt.OwnedData

func (o owned) DeleteResource(ctx context.Context, res control.Resource) error {
	for _, d := range o {
		if err := d.DeleteResource(ctx, res); err != nil {
			return err
		}
	}
	return nil
}
