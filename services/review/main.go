// Command review keeps abuse-monitoring records for at most 30 days per
// geography, detects recurring abuse from safety signals, and serves the
// review console where approved reviewers look up flagged requests one at a
// time, every access audited.
//
// Configuration is read from TERROIR_* environment variables (see the
// repository README and Config); its admin endpoints listen on
// 127.0.0.1:9107 by default, the console on 127.0.0.1:8443 when its
// certificates and people directory are configured, and it keeps its state
// in the Redis of each geography.
//
// Usage:
//
//	review                       run the service
//	review verify-audit -geo eu  verify eu's audit chain; exit 1 when a link is broken
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/pkg/daemon"
	"github.com/terroir-ai/terroir/pkg/keys"
	"github.com/terroir-ai/terroir/pkg/logging"
	"github.com/terroir-ai/terroir/services/review/audit"
	"github.com/terroir-ai/terroir/services/review/console"
	"github.com/terroir-ai/terroir/services/review/detect"
	"github.com/terroir-ai/terroir/services/review/signing"
	"github.com/terroir-ai/terroir/services/review/store"
)

const (
	service          = "review"
	defaultAdminAddr = "127.0.0.1:9107"
	useRedis         = true
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "verify-audit" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		code := verifyAudit(ctx, os.Args[2:], os.Getenv, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(daemon.Main(service, run))
}

func run(ctx context.Context, getenv func(string) string) error {
	env := config.New(getenv)
	common := daemon.LoadConfig(env, service, defaultAdminAddr)
	common.UseRedis = useRedis
	cfg := loadConfig(env)
	if err := env.Err(); err != nil {
		return err
	}
	rules, err := cfg.rules()
	if err != nil {
		return err
	}
	var files consoleFiles
	if cfg.ConsoleOn() {
		if files, err = cfg.loadConsoleFiles(); err != nil {
			return err
		}
	}
	d, err := daemon.Start(ctx, common)
	if err != nil {
		return err
	}
	parts, err := build(d, cfg, rules, files)
	if err != nil {
		// Nothing runs yet: a run that is already over only closes what
		// Start opened.
		over, cancel := context.WithCancel(ctx)
		cancel()
		return errors.Join(err, d.Run(over))
	}
	for _, p := range parts {
		d.Go(p.name, p.run)
	}
	if !cfg.ConsoleOn() {
		d.Log.Warn("review console is off: set TERROIR_REVIEW_TLS_CERT, TERROIR_REVIEW_TLS_KEY, TERROIR_REVIEW_CLIENT_CA and TERROIR_REVIEW_PEOPLE_FILE to serve it")
	}
	return d.Run(ctx)
}

type part struct {
	name string
	run  func(context.Context) error
}

// build wires the store, the audit trail, detection (whose new cases are
// audited) and, when configured, the console.
func build(d *daemon.Daemon, cfg Config, rules []detect.Rule, files consoleFiles) ([]part, error) {
	geos := d.Config.Geos
	st, err := store.New(store.Config{Bus: d.Bus, Redis: d.Redis, State: d.Control, Geos: geos, Log: d.Log})
	if err != nil {
		return nil, err
	}
	trail, err := audit.New(audit.Config{Bus: d.Bus, Redis: d.Redis, Geos: geos, Log: d.Log})
	if err != nil {
		return nil, err
	}
	det, err := detect.New(detect.Config{Bus: d.Bus, Redis: d.Redis, Geos: geos, Rules: rules,
		OnOpen: console.AuditCaseOpened(trail, d.Log), Log: d.Log})
	if err != nil {
		return nil, err
	}
	parts := []part{{"store", st.Run}, {"detect", det.Run}}
	if cfg.ConsoleOn() {
		signer, err := signing.New(d.Bus.Keys())
		if err != nil {
			return nil, err
		}
		con, err := console.New(console.Config{
			Addr: cfg.ConsoleAddr, Certificate: files.cert, ClientCAs: files.cas, People: files.people,
			Geos: geos, Redis: d.Redis,
			Records: st, Cases: det, Audit: trail, Publisher: d.ControlPublisher, Resources: d.Control, Signer: signer,
			CSRFKey: files.csrfKey, DrainTimeout: d.Config.DrainTimeout, Registerer: d.Registry, Log: d.Log,
		})
		if err != nil {
			return nil, err
		}
		parts = append(parts, part{"console", con.Run})
	}
	return parts, nil
}

// verifyAudit is `review verify-audit -geo <geo>`: it joins the
// geography's Kafka cluster as the service does (without serving
// anything), reads the geography's audit chain and prints whether every
// link holds. Exit codes: 0 intact, 1 broken or unreadable, 2 usage.
func verifyAudit(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("review verify-audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	g := fs.String("geo", "", "geography whose audit chain to verify (one of TERROIR_GEOS)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: review verify-audit -geo <geo>")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *g == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	env := config.New(getenv)
	common := daemon.LoadConfig(env, service, defaultAdminAddr)
	if err := env.Err(); err != nil {
		fmt.Fprintf(stderr, "review verify-audit: %v\n", err)
		return 1
	}
	if !slices.Contains(common.Geos, *g) {
		fmt.Fprintf(stderr, "review verify-audit: geography %q is not in TERROIR_GEOS (%v)\n", *g, common.Geos)
		return 2
	}
	b, err := connectBus(ctx, common, *g)
	if err != nil {
		fmt.Fprintf(stderr, "review verify-audit: %v\n", err)
		return 1
	}
	defer b.Close()
	ok, err := audit.VerifyCommand(ctx, b, *g, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "review verify-audit: %v\n", err)
		return 1
	}
	if !ok {
		return 1
	}
	return 0
}

// connectBus joins geo's Kafka cluster the way daemon.Start does, without
// an admin server, Redis or control plane, and without provisioning
// topics: verifying reads what is there.
func connectBus(ctx context.Context, common daemon.Config, geo string) (*bus.Bus, error) {
	log, err := logging.New(service, common.LogFormat, common.LogLevel)
	if err != nil {
		return nil, err
	}
	wrapper, err := keys.LoadKeyFile(common.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("TERROIR_KEY_FILE: %w", err)
	}
	b, err := bus.New(ctx, bus.Config{
		Namespace: common.Namespace, Brokers: map[string][]string{geo: common.Brokers[geo]},
		Security:   map[string]bus.Security{geo: common.KafkaSecurity[geo]},
		InstanceID: common.InstanceID + "-verify-audit", KeyWrapper: wrapper,
		Logger: log.WithOptions(zap.IncreaseLevel(zap.WarnLevel)),
	})
	if err != nil {
		return nil, fmt.Errorf("joining the Kafka cluster of %s: %w", geo, err)
	}
	return b, nil
}
