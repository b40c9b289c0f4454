// Command stackbench measures the stack as users run it: it starts the
// dev stack exactly as `make run` does (the launcher with its embedded
// broker, redis-server and every service process), on fresh state of its
// own (.terroir/stackbench-state, removed after; what earlier runs left in
// the broker would weigh on each measurement differently), plus a zero-delay
// OpenAI-compatible model server where the catalog's upstream model
// (llama-3.1-8b-instruct, http://127.0.0.1:8000/v1) points, and loads it
// from outside over HTTP from this process.
//
// In one run it measures the upstream directly and then the same requests
// through Terroir's REST API (both filter stages, the bus hops,
// encryption, abuse logging), and prints: latency added at each open-loop
// rate, the answered rate, CPU per request of every process of the stack
// (from /proc) and their sum, closed-loop throughput, the built-in model
// answering 32 tokens, and streams of 32 chunks (time to the first chunk
// and to the end), and a batch of 10,000 lines on the built-in model
// (lines per minute, and real-time p99 without and with it running).
// The load generator and the model server run on the same machine and
// their CPU is not counted as Terroir's.
//
// Usage (from scripts/): go run ./stackbench [-duration 15s] [-rates 200,1000,3000]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/terroir-ai/terroir/scripts/devstack/stack"
	"github.com/terroir-ai/terroir/scripts/internal/bench"
)

// prompt is about 32 tokens of benign text.
const prompt = "Please summarise in one sentence why regular exercise, a balanced diet and enough sleep help people stay healthy, focused and productive at work every day."

type config struct {
	rates       []int
	duration    time.Duration
	conns       int
	builtinRate int
	streamRate  int
	upstream    string
	api         string
	settle      time.Duration
	profile     string
	ratesOnly   bool
	stackEnv    []string
	batchLines  int
	batchTokens int
	batchRTRate int
	batchRTFor  time.Duration
	batchPairs  int
	batchOnly   bool
}

func main() {
	if addr := os.Getenv(echoEnv); addr != "" {
		if err := echoPeer(addr); err != nil {
			fmt.Fprintf(os.Stderr, "stackbench echo peer: %v\n", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "stackbench: %v\n", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("stackbench", flag.ContinueOnError)
	rates := fs.String("rates", "200,1000,3000", "open-loop rates, requests per second")
	fs.DurationVar(&c.duration, "duration", 15*time.Second, "length of each measurement")
	fs.IntVar(&c.conns, "conns", 64, "connections of the closed-loop measurement")
	fs.IntVar(&c.builtinRate, "builtin-rate", 1000, "open-loop rate of the built-in model answering 32 tokens")
	fs.IntVar(&c.streamRate, "stream-rate", 200, "streams opened per second")
	fs.StringVar(&c.upstream, "upstream", "127.0.0.1:8000", "address of the zero-delay model server (where the catalog's upstream model points)")
	fs.StringVar(&c.api, "api", "http://127.0.0.1:8080", "Terroir's REST API as the stack serves it")
	fs.DurationVar(&c.settle, "settle", 3*time.Second, "pause between measurements, for queues to drain")
	stackEnv := fs.String("stack-env", "", "extra environment of the stack's processes, comma-separated K=V (for trying settings such as GOGC)")
	fs.BoolVar(&c.ratesOnly, "rates-only", false, "measure only the open-loop rates (no closed loop, built-in model or streams), for quick comparisons")
	fs.StringVar(&c.profile, "profile", "", "write CPU profiles of every service during each open-loop rate through Terroir into this folder (<service>-<rate>.pb.gz; turns on TERROIR_ADMIN_PPROF)")
	fs.IntVar(&c.batchLines, "batch-lines", 10_000, "lines of the batch run on the built-in model (0: no batch measurement)")
	fs.IntVar(&c.batchTokens, "batch-tokens", 32, "max_tokens of each batch line")
	fs.IntVar(&c.batchRTRate, "batch-rt-rate", 200, "real-time rate measured without and with the batch running")
	fs.IntVar(&c.batchPairs, "batch-pairs", 3, "real-time measurements without and beside a batch, taken in turn; the rise is that of the medians")
	fs.DurationVar(&c.batchRTFor, "batch-rt-duration", 40*time.Second, "length of each real-time measurement beside the batch rows (a p99 of 15 s at 200 req/s moves by tens of percent between runs)")
	fs.BoolVar(&c.batchOnly, "batch-only", false, "measure only the batch and real time beside it")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if *stackEnv != "" {
		c.stackEnv = strings.Split(*stackEnv, ",")
	}
	for _, s := range strings.Split(*rates, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || r <= 0 {
			return c, fmt.Errorf("-rates: %q is not a positive rate", s)
		}
		c.rates = append(c.rates, r)
	}
	return c, nil
}

func run(ctx context.Context, args []string, out io.Writer) error {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	wd, _ := os.Getwd()
	root, err := stack.FindRoot(wd)
	if err != nil {
		return err
	}
	up, err := startUpstream(cfg.upstream)
	if err != nil {
		return err
	}
	defer up.close()

	if cfg.profile != "" {
		if err := os.MkdirAll(cfg.profile, 0o755); err != nil {
			return err
		}
		os.Setenv("TERROIR_ADMIN_PPROF", "1")
	}
	fmt.Fprintln(out, "starting the stack as `make run` does, on fresh state in .terroir/stackbench-state (log in .terroir/stackbench-stack.log)")
	st, err := startStack(ctx, root, cfg.stackEnv)
	if err != nil {
		return err
	}
	defer st.stop()
	if err := st.ready(ctx, 3*time.Minute); err != nil {
		return err
	}
	key, err := setUp(ctx, cfg.api, st.token)
	if err != nil {
		return err
	}
	hdr := http.Header{"Content-Type": {"application/json"}}
	direct := target{url: "http://" + cfg.upstream + "/v1/chat/completions", header: hdr, body: chatBody("bench-upstream", false, 0)}
	auth := hdr.Clone()
	auth.Set("Authorization", "Bearer "+key)
	through := target{url: cfg.api + "/v1/chat/completions", header: auth, body: chatBody("up", false, 0)}
	builtin := target{url: cfg.api + "/v1/chat/completions", header: auth, body: chatBody("ngram", false, 32)}
	streamed := target{url: cfg.api + "/v1/chat/completions", header: auth, body: chatBody("up", true, 0)}

	// warm up: connections, the services' caches, the broker's batches
	if o := openLoop(through, 100, 3*time.Second); o.answered == 0 {
		return fmt.Errorf("no request answered through Terroir while warming up: %s", o.failures())
	}
	pause := func() {
		sleepCtx(ctx, cfg.settle)
		if waited := waitQuiet(ctx, st.pid, 2*time.Minute); waited > 2*time.Second {
			fmt.Fprintf(os.Stderr, "stackbench: the stack was busy for %s after the last measurement\n", waited.Round(time.Second))
		}
	}

	var rows []bench.Row
	for _, rate := range []int{200, 1000} {
		row, err := loopbackFloor(rate, cfg.duration/3)
		if err != nil {
			return fmt.Errorf("measuring the loopback floor: %w", err)
		}
		rows = append(rows, row)
	}
	pause()
	rows = append(rows, idleRow(ctx, st.pid, cfg.duration))
	if cfg.batchOnly {
		br, err := batchRows(ctx, cfg.api, key, cfg.batchLines, cfg.batchTokens, cfg.batchRTRate, cfg.batchPairs, cfg.batchRTFor, through, st.pid)
		if err != nil {
			return err
		}
		return report(out, cfg, br)
	}
	for _, rate := range cfg.rates {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d := openLoop(direct, rate, cfg.duration)
		pause()
		stopProfiles := profile(cfg.profile, rate, cfg.duration)
		before, kbefore := sampleCPU(st.pid), sampleKernel(st.pid)
		o := openLoop(through, rate, cfg.duration)
		after, kafter := sampleCPU(st.pid), sampleKernel(st.pid)
		stopProfiles()
		pause()
		rows = append(rows, rateRows(rate, d, o, before, after)...)
		rows[len(rows)-1].Comment = joinNotes(rows[len(rows)-1].Comment, kernelPerRequest(kbefore, kafter, o.answered))
	}

	if cfg.ratesOnly {
		return report(out, cfg, rows)
	}
	pause()
	dc := closedLoop(direct, cfg.conns, cfg.duration)
	pause()
	before := sampleCPU(st.pid)
	tc := closedLoop(through, cfg.conns, cfg.duration)
	after := sampleCPU(st.pid)
	breakdown, cpu := perRequest(before, after, tc.answered)
	rows = append(rows,
		bench.Row{Name: fmt.Sprintf("closed loop, %d connections: upstream direct", cfg.conns), N: dc.answered, Lat: dc.lat,
			Value: fmt.Sprintf("%.0f req/s", dc.rate()), Errors: dc.failed, Comment: dc.failures()},
		bench.Row{Name: fmt.Sprintf("closed loop, %d connections: through Terroir", cfg.conns), N: tc.answered, Lat: tc.lat,
			Value: fmt.Sprintf("%.0f req/s, CPU %s/request", tc.rate(), ms(cpu)), Errors: tc.failed,
			Target: ">= 3500 req/s", Met: bench.YesNo(tc.rate() >= 3500), Comment: joinNotes(breakdown, tc.failures())})

	pause()
	before = sampleCPU(st.pid)
	bo := openLoop(builtin, cfg.builtinRate, cfg.duration)
	after = sampleCPU(st.pid)
	breakdown, cpu = perRequest(before, after, bo.answered)
	share := answeredShare(bo, cfg.builtinRate, cfg.duration)
	rows = append(rows, bench.Row{Name: fmt.Sprintf("built-in model, 32 tokens, %d req/s", cfg.builtinRate), N: bo.answered, Lat: bo.lat,
		Value: fmt.Sprintf("%.1f%% answered, CPU %s/request", 100*share, ms(cpu)), Errors: bo.failed,
		Target: ">= 99% answered, p99 <= 50 ms", Met: bench.YesNo(share >= 0.99 && bo.lat.Quantile(0.99) <= 50*time.Millisecond),
		Comment: joinNotes(breakdown, bo.failures())})

	pause()
	before = sampleCPU(st.pid)
	so := streams(streamed, cfg.streamRate, cfg.duration)
	after = sampleCPU(st.pid)
	breakdown, cpu = perRequest(before, after, so.answered)
	chunks := 0.0
	if so.answered > 0 {
		chunks = float64(so.chunks.Load()) / float64(so.answered)
	}
	rows = append(rows,
		bench.Row{Name: fmt.Sprintf("streams, %d/s of %d chunks: first chunk", cfg.streamRate, streamChunks), N: so.answered, Lat: so.first, Errors: so.failed,
			Value: fmt.Sprintf("%.0f streams/s, %.1f content chunks each", float64(so.answered)/so.elapsed.Seconds(), chunks)},
		bench.Row{Name: fmt.Sprintf("streams, %d/s of %d chunks: end", cfg.streamRate, streamChunks), N: so.answered, Lat: so.end, Errors: so.failed,
			Value: fmt.Sprintf("CPU %s/stream", ms(cpu)), Comment: breakdown})

	if cfg.batchLines > 0 {
		pause()
		br, err := batchRows(ctx, cfg.api, key, cfg.batchLines, cfg.batchTokens, cfg.batchRTRate, cfg.batchPairs, cfg.batchRTFor, through, st.pid)
		if err != nil {
			return err
		}
		rows = append(rows, br...)
	}
	return report(out, cfg, rows)
}

func report(out io.Writer, cfg config, rows []bench.Row) error {
	fmt.Fprintln(out)
	fmt.Fprintf(out, "Terroir stack as `make run` starts it on fresh state (launcher with embedded broker, redis-server, 7 services and the batch lane's content safety and inference), loaded over HTTP from outside; %s per measurement; upstream: zero-delay model server in this process\n", cfg.duration)
	if len(cfg.stackEnv) > 0 {
		fmt.Fprintf(out, "extra environment of the stack: %s\n", strings.Join(cfg.stackEnv, " "))
	}
	fmt.Fprintln(out, "added = latency through Terroir minus the upstream's own at the same quantile and rate; CPU = user+system time of every process of the stack, divided by the requests answered")
	return bench.PrintReport(out, bench.Machine("embedded broker of the dev stack"), rows)
}

// idleRow measures the stack with nothing to do for d: what its
// processes spend on heartbeats, fetches waiting out their maximum wait
// and timers, in thousandths of a core.
func idleRow(ctx context.Context, root int, d time.Duration) bench.Row {
	before, kbefore := sampleCPU(root), sampleKernel(root)
	sleepCtx(ctx, d)
	after, kafter := sampleCPU(root), sampleKernel(root)
	seconds := int(d / time.Second)
	breakdown, cpu := perEach(before, after, seconds, "second")
	return bench.Row{Name: "idle stack, per second", Value: fmt.Sprintf("%.1f%% of a core", 100*cpu.Seconds()),
		Comment: joinNotes(breakdown, kernelPerEach(kbefore, kafter, seconds, "second"))}
}

// rateRows are the rows of one open-loop rate.
func rateRows(rate int, d, o outcome, before, after cpuSample) []bench.Row {
	breakdown, cpu := perRequest(before, after, o.answered)
	share := answeredShare(o, rate, o.elapsed)
	added := func(q float64) time.Duration { return o.lat.Quantile(q) - d.lat.Quantile(q) }
	addedRow := bench.Row{Name: fmt.Sprintf("added by Terroir, %d req/s", rate),
		Value: fmt.Sprintf("p50 %s, p90 %s, p99 %s", ms(added(0.5)), ms(added(0.9)), ms(added(0.99)))}
	cpuRow := bench.Row{Name: fmt.Sprintf("CPU per request, %d req/s", rate), Value: ms(cpu), Comment: breakdown}
	switch rate {
	case 200:
		cpuRow.Target, cpuRow.Met = "<= 1.5 ms", bench.YesNo(cpu <= 1500*time.Microsecond)
	case 1000:
		cpuRow.Target, cpuRow.Met = "<= 1.0 ms", bench.YesNo(cpu <= time.Millisecond)
		addedRow.Target = "p50 <= 3 ms, p99 <= 20 ms"
		addedRow.Met = bench.YesNo(added(0.5) <= 3*time.Millisecond && added(0.99) <= 20*time.Millisecond)
	case 3000:
		addedRow.Target = ">= 99% answered, p99 <= 100 ms"
		addedRow.Met = bench.YesNo(share >= 0.99 && added(0.99) <= 100*time.Millisecond)
	}
	return []bench.Row{
		{Name: fmt.Sprintf("upstream direct, %d req/s", rate), N: d.answered, Lat: d.lat, Errors: d.failed,
			Value: fmt.Sprintf("%.0f answered/s", d.rate()), Comment: d.failures()},
		{Name: fmt.Sprintf("through Terroir, %d req/s", rate), N: o.answered, Lat: o.lat, Errors: o.failed,
			Value: fmt.Sprintf("%.0f answered/s (%.1f%%)", o.rate(), 100*share), Comment: o.failures()},
		addedRow, cpuRow,
	}
}

// answeredShare is the share of the offered requests answered with 200.
func answeredShare(o outcome, rate int, d time.Duration) float64 {
	offered := float64(rate) * d.Seconds()
	return min(float64(o.answered)/offered, 1)
}

func ms(d time.Duration) string { return bench.MS(d) }

func joinNotes(parts ...string) string {
	var keep []string
	for _, p := range parts {
		if p != "" {
			keep = append(keep, p)
		}
	}
	return strings.Join(keep, "; ")
}

func chatBody(model string, stream bool, maxTokens int) []byte {
	m := map[string]any{"model": model, "messages": []any{map[string]any{"role": "user", "content": prompt}}}
	if stream {
		m["stream"] = true
	}
	if maxTokens > 0 {
		m["max_tokens"] = maxTokens
	}
	b, _ := json.Marshal(m)
	return b
}

// runningStack is the launcher and its children.
type runningStack struct {
	cmd   *exec.Cmd
	pid   int
	token string
	done  chan struct{}
	log   *os.File
	state string // the stack's state directory, removed when it stops
}

// startStack builds the launcher and starts it as `make run` does.
func startStack(ctx context.Context, root string, env []string) (*runningStack, error) {
	bin := filepath.Join(root, ".terroir", "bin", "devstack")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return nil, err
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./devstack")
	build.Dir = filepath.Join(root, "scripts")
	if b, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the launcher: %v\n%s", err, b)
	}
	logf, err := os.Create(filepath.Join(root, ".terroir", "stackbench-stack.log"))
	if err != nil {
		return nil, err
	}
	// A stack of its own, started as make run starts it the first time:
	// what earlier runs left in the broker and Redis (gigabytes of abuse
	// log and signals after a few benches) would otherwise weigh on every
	// measurement, differently each time.
	state := filepath.Join(root, ".terroir", "stackbench-state")
	if err := os.RemoveAll(state); err != nil {
		logf.Close()
		return nil, err
	}
	cmd := exec.Command(bin, "-state", state)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting the launcher: %w", err)
	}
	st := &runningStack{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{}), log: logf, state: state}
	go func() { _ = cmd.Wait(); close(st.done) }()
	st.token = os.Getenv("TERROIR_OPERATOR_TOKEN")
	return st, nil
}

// ready waits until every service answers /readyz with 200.
func (s *runningStack) ready(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for _, svc := range stack.Services() {
		for {
			select {
			case <-s.done:
				return errors.New("the stack stopped while starting; see .terroir/stackbench-stack.log")
			default:
			}
			resp, err := http.Get("http://" + svc.AdminAddr + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s was not ready within %s; see .terroir/stackbench-stack.log", svc.Name, within)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if s.token == "" {
		b, err := os.ReadFile(filepath.Join(s.state, "operator-token"))
		if err != nil {
			return fmt.Errorf("reading the operator token the launcher wrote: %w", err)
		}
		s.token = strings.TrimSpace(string(b))
	}
	return nil
}

// stop stops the stack as Ctrl-C does.
func (s *runningStack) stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(60 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.log.Close()
	_ = os.RemoveAll(s.state)
}

// setUp creates the bench resource and its deployments and returns an
// API key: "up" on the upstream model, "ngram" on the built-in one, with
// capacity for every rate measured.
func setUp(ctx context.Context, api, token string) (string, error) {
	call := func(method, path string, body any) (map[string]any, error) {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(ctx, method, api+path, rd)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
		}
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		return m, nil
	}
	res := map[string]any{"location": "eu", "properties": map[string]any{"contact": map[string]any{"name": "Bench", "email": "bench@example.com"}}}
	if _, err := call("PUT", "/mgmt/resources/bench", res); err != nil {
		return "", err
	}
	for name, model := range map[string]string{"up": "llama-3.1-8b-instruct", "ngram": "terroir-ngram"} {
		d := map[string]any{"sku": map[string]any{"name": "Standard", "capacity": 100_000},
			"properties": map[string]any{"model": map[string]any{"format": "OpenAI", "name": model, "version": "1"}}}
		if _, err := call("PUT", "/mgmt/resources/bench/deployments/"+name, d); err != nil {
			return "", err
		}
	}
	keys, err := call("POST", "/mgmt/resources/bench/regenerateKey", map[string]any{"keyName": "key1"})
	if err != nil {
		return "", err
	}
	key, _ := keys["key1"].(string)
	if key == "" {
		return "", errors.New("regenerateKey returned no key1")
	}
	return key, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// profile fetches a CPU profile of every service for most of d, into
// dir; the returned function waits for them. dir "" profiles nothing.
func profile(dir string, rate int, d time.Duration) func() {
	if dir == "" {
		return func() {}
	}
	secs := max(1, int((d - time.Second).Seconds()))
	var wg sync.WaitGroup
	targets := append(stack.Services(), stack.Service{Name: "devstack", AdminAddr: "127.0.0.1:9100"})
	for _, svc := range targets {
		wg.Go(func() {
			resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", svc.AdminAddr, secs))
			if err != nil {
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return
			}
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pb.gz", svc.Name, rate)))
			if err != nil {
				return
			}
			defer f.Close()
			_, _ = io.Copy(f, resp.Body)
		})
	}
	return wg.Wait
}
