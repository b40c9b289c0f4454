package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/terroir-ai/terroir/scripts/devstack/stack"
	"github.com/terroir-ai/terroir/scripts/internal/bench"
	"github.com/terroir-ai/terroir/services/inference/builtin"
)

// Targets of the filtered request path, from the issue that built it:
// what ingress → content safety → inference → content safety → ingress
// adds over the model itself, at 1,000 requests per second.
const (
	pathTargetP50 = 3 * time.Millisecond
	pathTargetP99 = 15 * time.Millisecond
)

// pathServices are the processes of the request path.
var pathServices = []string{"ingress", "contentsafety", "inference"}

// pathBody is the measured request: a short chat prompt answered with one
// token of the built-in model, which takes tens of microseconds (measured
// and shown as its own row), so what remains is what the path adds.
const pathBody = `{"model":"chat","messages":[{"role":"user","content":"Hello there, how are you today?"}],"max_tokens":1}`

// pathStack is the running request path.
type pathStack struct {
	base  string
	key   string
	procs []*stack.Proc
}

// startPath builds and starts the path's services on the benchmark's
// cluster and creates a resource with a chat deployment.
func startPath(ctx context.Context, e *env) (*pathStack, error) {
	root := e.Root
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("finding the go command: %w", err)
	}
	bin := filepath.Join(e.Tmp, "bin")
	fmt.Fprintf(e.stderr, "busbench: building %s\n", strings.Join(pathServices, ", "))
	if err := stack.Build(ctx, goCmd, root, bin, pathServices); err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	token := hex.EncodeToString(tok)
	httpAddr, err := bench.FreeAddr()
	if err != nil {
		return nil, err
	}
	ps := &pathStack{base: "http://" + httpAddr}
	common := map[string]string{
		"TERROIR_GEOS": geo, "TERROIR_KAFKA_BROKERS": strings.Join(e.brokers, ","), "TERROIR_KAFKA_NAMESPACE": e.ns,
		"TERROIR_KEY_FILE": e.KeyFile, "TERROIR_TOPICS_FILE": filepath.Join(root, "deployments", "topics.yaml"),
		"TERROIR_CATALOG_FILE": filepath.Join(root, "deployments", "catalog.yaml"), "TERROIR_LOG_LEVEL": "warn",
		"TERROIR_LOG_FORMAT": "console", "TERROIR_OPERATOR_TOKEN": token, "TERROIR_HTTP_ADDR": httpAddr,
		"TERROIR_KAFKA_REPLICATION": fmt.Sprint(e.cfg.replication),
	}
	var services []stack.Service
	out := stack.NewOutput(e.stderr, false)
	for _, name := range pathServices {
		admin, err := bench.FreeAddr()
		if err != nil {
			return nil, err
		}
		env := map[string]string{"TERROIR_ADMIN_ADDR": admin, "TERROIR_INSTANCE_ID": name + "-" + e.ns}
		for k, v := range common {
			env[k] = v
		}
		p, err := stack.StartProc(stack.ProcSpec{Name: name, Path: filepath.Join(bin, name), Dir: root,
			Env: stack.MergeEnv(os.Environ(), env), Out: out.Writer(name)})
		if err != nil {
			return nil, err
		}
		ps.procs = append(ps.procs, p)
		e.OnClose(func() { _ = p.Stop(15 * time.Second) })
		services = append(services, stack.Service{Name: name, AdminAddr: admin})
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, r := range stack.WaitReady(rctx, &http.Client{Timeout: 2 * time.Second}, services, 100*time.Millisecond) {
		if !r.Ready {
			return nil, fmt.Errorf("%s not ready: %s", r.Name, r.Last)
		}
	}
	mgmt := func(method, path string, body any, want int) (map[string]any, error) {
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(ctx, method, ps.base+path, bytes.NewReader(raw))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			return nil, fmt.Errorf("%s %s = %d: %s", method, path, resp.StatusCode, b)
		}
		var m map[string]any
		return m, json.Unmarshal(b, &m)
	}
	if _, err := mgmt("PUT", "/mgmt/resources/"+resource, map[string]any{"location": geo}, http.StatusCreated); err != nil {
		return nil, err
	}
	if _, err := mgmt("PUT", "/mgmt/resources/"+resource+"/deployments/chat", map[string]any{"sku": map[string]any{"name": "Standard", "capacity": 1_000_000},
		"properties": map[string]any{"model": map[string]any{"name": "terroir-ngram"}}}, http.StatusCreated); err != nil {
		return nil, err
	}
	keys, err := mgmt("POST", "/mgmt/resources/"+resource+"/listKeys", nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	ps.key, _ = keys["key1"].(string)
	return ps, nil
}

// pathClient keeps enough idle connections for the open loop.
var pathClient = &http.Client{Transport: &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, IdleConnTimeout: time.Minute}}

func (ps *pathStack) call(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, "POST", ps.base+"/v1/chat/completions", strings.NewReader(pathBody))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+ps.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := pathClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// benchPath measures the request path end to end: the model's own time
// for the request, then open-loop runs at each of -path-rates for
// -path-duration, then the highest rate the path sustains.
func benchPath(ctx context.Context, e *env) ([]bench.Row, error) {
	var rows []bench.Row
	m, err := builtin.Load()
	if err != nil {
		return nil, err
	}
	var model bench.Hist
	for range 2000 {
		start := time.Now()
		if _, err := m.Chat(ctx, []builtin.Message{{Role: builtin.RoleUser, Content: "Hello there, how are you today?"}}, builtin.Params{MaxTokens: 1}, nil); err != nil {
			return nil, err
		}
		model = append(model, time.Since(start))
	}
	mr := bench.LatencyRow("path: the model alone (built-in, 1 token)", model)
	mr.Comment = "what the backend itself takes; the rows below include it"
	rows = append(rows, mr)
	m = nil

	ps, err := startPath(ctx, e)
	if err != nil {
		return rows, err
	}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	err = ps.call(pctx)
	cancel()
	if err != nil {
		return rows, fmt.Errorf("first request: %w", err)
	}
	if _, err := openLoop(ctx, 200, e.cfg.warmup, e.cfg.timeout, func(ctx context.Context, _ int) error { return ps.call(ctx) }); err != nil {
		return rows, err
	}
	var errs []error
	for _, rate := range e.cfg.pathRates {
		res, err := openLoop(ctx, rate, e.cfg.pathDuration, e.cfg.timeout, func(ctx context.Context, _ int) error { return ps.call(ctx) })
		if err != nil {
			return rows, err
		}
		r := bench.LatencyRow(fmt.Sprintf("path: added latency at %d req/s for %s", rate, e.cfg.pathDuration), res.lat)
		r.N, r.Errors = len(res.lat)+res.errors, res.errors
		r.Value = fmt.Sprintf("%.1f req/s", res.achieved)
		r.Target = fmt.Sprintf("p50 ≤ %s, p99 ≤ %s", bench.MS(pathTargetP50), bench.MS(pathTargetP99))
		if len(r.Lat) > 0 {
			r.Met = bench.YesNo(r.Lat.Quantile(0.5) <= pathTargetP50 && r.Lat.Quantile(0.99) <= pathTargetP99 && res.errors == 0)
		}
		if res.firstErr != nil {
			r.Comment = fmt.Sprintf("first error: %v", res.firstErr)
		}
		rows = append(rows, r)
	}
	// The highest rate whose run keeps up (≥ 95% of it answered, under 1%
	// errors, p99 under a second).
	best := 0
	for _, rate := range e.cfg.pathProbe {
		res, err := openLoop(ctx, rate, 10*time.Second, e.cfg.timeout, func(ctx context.Context, _ int) error { return ps.call(ctx) })
		if err != nil {
			return rows, err
		}
		lat := res.lat.Sorted()
		ok := res.achieved >= 0.95*float64(rate) && float64(res.errors) < 0.01*float64(len(res.lat)+res.errors) && len(lat) > 0 && lat.Quantile(0.99) < time.Second
		fmt.Fprintf(e.stderr, "busbench: path at %d req/s: achieved %.0f, p99 %s, %d errors\n", rate, res.achieved, bench.MS(lat.Quantile(0.99)), res.errors)
		if !ok {
			break
		}
		best = rate
	}
	rows = append(rows, bench.Row{Name: "path: highest sustained rate (10 s steps)", Value: fmt.Sprintf("%d req/s", best),
		Comment: "steps " + strings.Trim(fmt.Sprint(e.cfg.pathProbe), "[]") + "; sustained = ≥ 95% answered, < 1% errors, p99 < 1 s"})
	return rows, errors.Join(errs...)
}

func parseRates(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var r int
		if _, err := fmt.Sscan(f, &r); err != nil || r <= 0 {
			return nil, fmt.Errorf("bad rate %q", f)
		}
		out = append(out, r)
	}
	slices.Sort(out)
	return out, nil
}
