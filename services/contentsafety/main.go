// Command contentsafety filters every prompt and every output on the
// request path: it classifies harm categories, detects jailbreak attempts
// and profanity, applies each deployment's content-filter policy and the
// resource's blocklists, annotates answers the way Azure does, and sends a
// safety signal (never text) and, unless the resource opted out, an
// abuse-monitoring record to the resource's home geography.
//
// Configuration is read from TERROIR_* environment variables (see the
// repository README); its admin endpoints listen on 127.0.0.1:9102 by
// default, and it keeps no state of its own in Redis.
package main

import (
	"context"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/pkg/daemon"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
	"github.com/terroir-ai/terroir/services/contentsafety/guard"
	"github.com/terroir-ai/terroir/services/contentsafety/pipeline"
)

const (
	service          = "contentsafety"
	defaultAdminAddr = "127.0.0.1:9102"
	useRedis         = false
)

func main() { os.Exit(daemon.Main(service, run)) }

func run(ctx context.Context, getenv func(string) string) error {
	env := config.New(getenv)
	common := daemon.LoadConfig(env, service, defaultAdminAddr)
	cfg := loadConfig(env, common.Geos...)
	if err := env.Err(); err != nil {
		return err
	}
	cls, err := classifier.New()
	if err != nil {
		return err
	}
	d, err := daemon.Start(ctx, common)
	if err != nil {
		return err
	}
	// a guard per geography, so that text is rated where it is processed
	guards := map[string]*guard.Guard{}
	for geo, url := range cfg.GuardURLs {
		gc := cfg.Guard
		gc.URL = url
		g, err := guard.New(gc, d.Log.With(zap.String("geo", geo)), prometheus.WrapRegistererWith(prometheus.Labels{"geo": geo}, d.Registry))
		if err != nil {
			return err
		}
		defer g.Close()
		guards[geo] = g
	}
	p, err := pipeline.New(pipeline.Config{Bus: d.Bus, State: d.Control, Classifier: cls, Geos: common.Geos,
		Stream: classifier.StreamOptions{Window: cfg.StreamWindow, Overlap: min(64, cfg.StreamWindow)}, Guards: guards, Lanes: common.Lanes, Log: d.Log})
	if err != nil {
		return err
	}
	d.Go("pipeline", p.Run)
	return d.Run(ctx)
}
