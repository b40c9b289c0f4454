package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/terroir-ai/terroir/pkg/keys"
	"github.com/terroir-ai/terroir/scripts/devstack/stack"
)

// launcher is the name the launcher's own lines are prefixed with.
const launcher = "devstack"

// launcherAdminAddr serves the launcher's profiles when
// TERROIR_ADMIN_PPROF=1, beside the services' admin ports.
const launcherAdminAddr = "127.0.0.1:9100"

// serveProfiles serves net/http/pprof on addr until the process exits.
func serveProfiles(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), nil
}

// errUsage marks bad command-line flags (exit status 2).
var errUsage = errors.New("usage error")

// config is what the flags say.
type config struct {
	dir         string
	kafkaAddr   string
	redisAddr   string
	services    bool
	smoke       bool
	timeout     time.Duration
	stopTimeout time.Duration
	state       string
}

func parseFlags(args []string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.dir, "dir", "", "folder to start looking for go.work from (default: the working directory)")
	fs.StringVar(&c.state, "state", "", "directory of the stack's state: broker data, Redis, keyring, blobs, drops (default: <root>/.terroir)")
	fs.StringVar(&c.kafkaAddr, "kafka", "127.0.0.1:9092", "address of the embedded Kafka broker (port 0 picks a free port)")
	fs.StringVar(&c.redisAddr, "redis", "127.0.0.1:6390", "address of Redis")
	fs.BoolVar(&c.services, "services", true, "build and start the services (false: only the broker, Redis and the keyring)")
	fs.BoolVar(&c.smoke, "smoke", false, "start the stack, wait until every service's /readyz answers 200, then stop; exit 0 only if all were ready and stopped cleanly")
	fs.DurationVar(&c.timeout, "timeout", 90*time.Second, "with -smoke, how long to wait for every service to be ready")
	fs.DurationVar(&c.stopTimeout, "stop-timeout", 20*time.Second, "how long services get to stop after SIGTERM before they are killed")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: devstack [flags]\n\nRuns the Terroir dev stack; Ctrl-C stops everything.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if c.dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return c, fmt.Errorf("finding the working directory: %w", err)
		}
		c.dir = wd
	}
	return c, nil
}

// run starts the stack as the flags in args say, writes everything to
// stdout, and returns when the stack has stopped: after ctx ends, after a
// service exits on its own, or, with -smoke, after the readiness check.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	root, err := stack.FindRoot(cfg.dir)
	if err != nil {
		return fmt.Errorf("finding the repository root: %w", err)
	}
	out := stack.NewOutput(stdout, useColor(stdout))
	if cfg.state == "" {
		cfg.state = filepath.Join(root, ".terroir")
	}
	state := cfg.state
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("creating state directory: %w", err)
	}

	broker, err := stack.StartBroker(cfg.kafkaAddr, filepath.Join(state, "kafka"), out)
	if err != nil {
		return err
	}
	out.Printf(launcher, "Kafka broker listening on %s (data in %s)", broker.Addr(), filepath.Join(state, "kafka"))
	if os.Getenv("TERROIR_ADMIN_PPROF") == "1" {
		// The launcher runs the embedded broker: profile it like a service.
		if addr, err := serveProfiles(launcherAdminAddr); err != nil {
			out.Printf(launcher, "profiles of the launcher not served: %v", err)
		} else {
			out.Printf(launcher, "profiles of the launcher and its broker on http://%s/debug/pprof/", addr)
		}
	}

	redis, err := stack.StartRedis(ctx, stack.RedisConfig{
		Addr: cfg.redisAddr,
		Dir:  filepath.Join(state, "redis"),
		Out:  out,
	})
	if err != nil {
		broker.Close()
		return interrupted(ctx, cfg, err)
	}
	if !redis.Embedded() {
		out.Printf(launcher, "redis-server answering on %s (data in %s)", redis.Addr(), filepath.Join(state, "redis"))
	}

	err = runWithInfra(ctx, cfg, root, out, broker.Addr(), redis)

	out.Printf(launcher, "stopping Redis")
	if rerr := redis.Close(); rerr != nil {
		err = errors.Join(err, fmt.Errorf("stopping Redis: %w", rerr))
	}
	out.Printf(launcher, "stopping Kafka broker")
	broker.Close()
	if err != nil {
		return err
	}
	out.Printf(launcher, "stopped cleanly")
	return nil
}

// runWithInfra does everything between starting and stopping the broker
// and Redis.
func runWithInfra(ctx context.Context, cfg config, root string, out *stack.Output, kafkaAddr string, redis *stack.Redis) error {
	state := cfg.state
	keyFile := filepath.Join(state, "keys", "keyring.json")
	if err := os.MkdirAll(filepath.Dir(keyFile), 0o700); err != nil {
		return fmt.Errorf("creating keyring directory: %w", err)
	}
	if err := keys.EnsureKeyFile(keyFile, []string{"eu", "us"}); err != nil {
		return fmt.Errorf("creating dev keyring %s: %w", keyFile, err)
	}
	out.Printf(launcher, "dev keyring %s", keyFile)
	token, tokenFile := os.Getenv("TERROIR_OPERATOR_TOKEN"), filepath.Join(state, "operator-token")
	if token == "" {
		var err error
		if token, err = stack.EnsureOperatorToken(tokenFile); err != nil {
			return err
		}
	}

	review, err := stack.EnsureReviewPKI(filepath.Join(state, "review"))
	if err != nil {
		return err
	}

	var services []stack.Service
	if cfg.services {
		services = stack.Services()
	}
	group := stack.NewGroup(len(services))
	if len(services) > 0 {
		if err := buildServices(ctx, root, out, services); err != nil {
			return interrupted(ctx, cfg, err)
		}
		env := map[string]string{
			"TERROIR_KAFKA_BROKERS": kafkaAddr,
			"TERROIR_REDIS_ADDR":    redis.Addr(),
			"TERROIR_KEY_FILE":      keyFile,
			"TERROIR_TOPICS_FILE":   filepath.Join(root, "deployments", "topics.yaml"),
			"TERROIR_CATALOG_FILE":  filepath.Join(root, "deployments", "catalog.yaml"),
			"TERROIR_BLOB_DIR":      filepath.Join(state, "blobs"),
		}
		if os.Getenv("TERROIR_BATCH_DROPS_DIR") == "" {
			env["TERROIR_BATCH_DROPS_DIR"] = filepath.Join(state, "drops")
		}
		if os.Getenv("TERROIR_OPERATOR_TOKEN") == "" {
			// A file rather than the variable: only ingress reads it, and
			// the token stays out of every process's environment.
			env["TERROIR_OPERATOR_TOKEN_FILE"] = tokenFile
		}
		if os.Getenv("TERROIR_LOG_FORMAT") == "" {
			env["TERROIR_LOG_FORMAT"] = "console"
		}
		for k, v := range review.Env() {
			if os.Getenv(k) == "" {
				env[k] = v
			}
		}
		if err := startServices(root, binDir(root), out, group, services, env); err != nil {
			return errors.Join(err, stopServices(cfg, out, group))
		}
	}

	if cfg.smoke {
		return smoke(ctx, cfg, out, group, services, token, review)
	}
	demo := ensureDemo(ctx, cfg, out, state, services, token)
	printBanner(out, state, kafkaAddr, redis, services, token, review, demo)

	var runErr error
	select {
	case <-ctx.Done():
		out.Printf(launcher, "stopping")
	case p := <-group.Exited():
		runErr = fmt.Errorf("%s exited on its own (%s)", p.Name(), p.ExitStatus())
		out.Printf(launcher, "%s; stopping the stack", runErr)
	case <-redis.Done():
		runErr = fmt.Errorf("redis-server exited on its own (%s)", redis.ExitStatus())
		out.Printf(launcher, "%s; stopping the stack", runErr)
	}
	return errors.Join(runErr, stopServices(cfg, out, group))
}

// interrupted turns an error caused by Ctrl-C into a clean stop, except in a
// smoke test, which then did not pass.
func interrupted(ctx context.Context, cfg config, err error) error {
	if ctx.Err() != nil && !cfg.smoke {
		return nil
	}
	return err
}

func buildServices(ctx context.Context, root string, out *stack.Output, services []stack.Service) error {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("building services: finding the go command: %w", err)
	}
	bins := binDir(root)
	var names []string
	for _, s := range services {
		if !slices.Contains(names, s.Bin()) {
			names = append(names, s.Bin())
		}
	}
	out.Printf(launcher, "building %s into %s", strings.Join(names, ", "), bins)
	start := time.Now()
	if err := stack.Build(ctx, goCmd, root, bins, names); err != nil {
		return err
	}
	out.Printf(launcher, "built %d services in %s", len(names), time.Since(start).Round(100*time.Millisecond))
	return nil
}

func startServices(root, binDir string, out *stack.Output, group *stack.Group, services []stack.Service, env map[string]string) error {
	base := os.Environ()
	for _, s := range services {
		set := map[string]string{"TERROIR_ADMIN_ADDR": s.AdminAddr}
		if os.Getenv("GOMAXPROCS") == "" {
			set["GOMAXPROCS"] = strconv.Itoa(procs())
		}
		for k, v := range env {
			set[k] = v
		}
		for k, v := range s.Env {
			if os.Getenv(k) == "" {
				set[k] = v
			}
		}
		p, err := group.Add(stack.ProcSpec{
			Name: s.Name,
			Path: filepath.Join(binDir, s.Bin()),
			Dir:  root,
			Env:  stack.MergeEnv(base, set),
			Out:  out.Writer(s.Name),
		})
		if err != nil {
			return err
		}
		out.Printf(launcher, "started %s (pid %d, admin http://%s)", s.Name, p.Pid(), s.AdminAddr)
	}
	return nil
}

func stopServices(cfg config, out *stack.Output, group *stack.Group) error {
	if len(group.Procs()) == 0 {
		return nil
	}
	out.Printf(launcher, "sending SIGTERM to %d services (up to %s to stop)", len(group.Procs()), cfg.stopTimeout)
	err := group.Stop(cfg.stopTimeout, func(p *stack.Proc) {
		out.Printf(launcher, "%s did not stop within %s: killing it", p.Name(), cfg.stopTimeout)
	})
	for _, p := range group.Procs() {
		out.Printf(launcher, "%s stopped (%s)", p.Name(), p.ExitStatus())
	}
	return err
}

// smoke waits until every service is ready, prints a table, and stops the
// services. It fails unless all were ready and all stopped cleanly.
func smoke(ctx context.Context, cfg config, out *stack.Output, group *stack.Group, services []stack.Service, token string, review *stack.ReviewPKI) error {
	out.Printf(launcher, "smoke test: waiting up to %s for every /readyz to answer 200", cfg.timeout)
	pollCtx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	var exitErr error
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case p := <-group.Exited():
			exitErr = fmt.Errorf("%s exited during the smoke test (%s)", p.Name(), p.ExitStatus())
			out.Printf(launcher, "%s", exitErr)
			cancel()
		case <-pollCtx.Done():
		}
	}()
	client := &http.Client{Timeout: 2 * time.Second}
	results := stack.WaitReady(pollCtx, client, services, 250*time.Millisecond)
	cancel()
	<-watched

	var notReady []string
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tREADY\tLAST ANSWER")
	for _, r := range results {
		state := "ready"
		if !r.Ready {
			state = "not ready"
			notReady = append(notReady, r.Name)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, state, r.Last)
	}
	_ = tw.Flush()
	out.Raw("\n" + b.String() + "\n")

	var errs []error
	if len(notReady) == 0 && exitErr == nil && slices.ContainsFunc(services, func(s stack.Service) bool { return s.Name == "ingress" }) {
		mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := stack.CheckManagement(mctx, client, "http://"+envOr("TERROIR_HTTP_ADDR", "127.0.0.1:8080"), token, fmt.Sprintf("smoke-%d", os.Getpid()))
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("smoke test failed: management API: %w", err))
		} else {
			out.Printf(launcher, "API: created a resource, issued its keys, read it with an app key, deployed the built-in model, got a filtered chat completion, deleted the resource")
		}
	}
	if len(notReady) == 0 && exitErr == nil && slices.ContainsFunc(services, func(s stack.Service) bool { return s.Name == "review" }) {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := stack.CheckConsole(cctx, envOr("TERROIR_REVIEW_ADDR", "127.0.0.1:8443"), review)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("smoke test failed: %w", err))
		} else {
			out.Printf(launcher, "review console: %s was let in with their certificate, a client without one was refused", review.Persons[0].Name)
		}
	}
	if ctx.Err() != nil {
		errs = append(errs, errors.New("smoke test interrupted"))
	}
	if exitErr != nil {
		errs = append(errs, exitErr)
	}
	if len(notReady) > 0 {
		errs = append(errs, fmt.Errorf("smoke test failed: not ready within %s: %s", cfg.timeout, strings.Join(notReady, ", ")))
	}
	if err := stopServices(cfg, out, group); err != nil {
		errs = append(errs, fmt.Errorf("smoke test failed: services did not stop cleanly: %w", err))
	}
	if len(errs) == 0 {
		out.Printf(launcher, "smoke test passed: all %d service processes ready and stopped cleanly", len(services))
	}
	return errors.Join(errs...)
}

// demoBanner is what the banner shows of the demo resource.
type demoBanner struct {
	key, inbox string
	err        error
}

// ensureDemo waits for ingress, then creates the demo resource once (see
// stack.EnsureDemo); its key is kept in .terroir/demo-key.
func ensureDemo(ctx context.Context, cfg config, out *stack.Output, state string, services []stack.Service, token string) *demoBanner {
	i := slices.IndexFunc(services, func(s stack.Service) bool { return s.Name == "ingress" })
	if i < 0 {
		return nil
	}
	dropsDir := envOr("TERROIR_BATCH_DROPS_DIR", filepath.Join(state, "drops"))
	d := &demoBanner{inbox: filepath.Join(dropsDir, stack.DemoResource, "inbox") + string(filepath.Separator)}
	wctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	if r := stack.WaitReady(wctx, client, services[i:i+1], 250*time.Millisecond); !r[0].Ready {
		d.err = fmt.Errorf("ingress not ready within %s (%s)", cfg.timeout, r[0].Last)
		return d
	}
	demo, err := stack.EnsureDemo(wctx, client, "http://"+envOr("TERROIR_HTTP_ADDR", "127.0.0.1:8080"), token, filepath.Join(state, "demo-key"))
	if err != nil {
		d.err = err
		out.Printf(launcher, "demo resource not set up: %v", err)
		return d
	}
	d.key = demo.Key
	return d
}

func printBanner(out *stack.Output, state, kafkaAddr string, redis *stack.Redis, services []stack.Service, token string, review *stack.ReviewPKI, demo *demoBanner) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nTerroir dev stack is running")
	if len(services) > 0 {
		fmt.Fprintf(tw, "  REST API\thttp://%s\n", envOr("TERROIR_HTTP_ADDR", "127.0.0.1:8080"))
		fmt.Fprintf(tw, "  operator token\t%s (Authorization: Bearer …, for /mgmt/)\n", token)
		fmt.Fprintf(tw, "  review console\thttps://%s (client certificates and people.yaml in %s)\n", envOr("TERROIR_REVIEW_ADDR", "127.0.0.1:8443"), review.Dir)
		for _, s := range services {
			fmt.Fprintf(tw, "  admin %s\thttp://%s\n", s.Name, s.AdminAddr)
		}
	}
	fmt.Fprintf(tw, "  Kafka\t%s\n", kafkaAddr)
	if redis.Embedded() {
		fmt.Fprintf(tw, "  Redis\t%s (embedded, in memory only)\n", redis.Addr())
	} else {
		fmt.Fprintf(tw, "  Redis\t%s\n", redis.Addr())
	}
	fmt.Fprintf(tw, "  state\t%s\n", state)
	_ = tw.Flush()
	if demo != nil {
		if demo.err != nil {
			fmt.Fprintf(&b, "\nThe demo resource could not be set up: %v\n", demo.err)
		} else {
			base := "http://" + envOr("TERROIR_HTTP_ADDR", "127.0.0.1:8080")
			fmt.Fprintf(&b, "\nDemo resource %q (%s; deployments chat and embed on the built-in models)\n", stack.DemoResource, stack.DemoGeo)
			fmt.Fprintf(&b, "  API key      %s\n", demo.key)
			fmt.Fprintf(&b, "  first answer %s\n", stack.DemoCurl(base, demo.key))
			fmt.Fprintf(&b, "  batch drops  write a .jsonl file into %s; results appear in ../outbox/\n", demo.inbox)
		}
	}
	b.WriteString("Ctrl-C stops everything.\n\n")
	out.Raw(b.String())
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// useColor reports whether w is a terminal that should get coloured
// prefixes (never when NO_COLOR is set or TERM is dumb).
func useColor(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// binDir is where the service binaries are built: under the repository
// whatever the state directory (-state).
func binDir(root string) string { return filepath.Join(root, ".terroir", "bin") }
