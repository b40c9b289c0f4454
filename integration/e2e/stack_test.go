// Package e2e runs Terroir's services as the processes they are in
// production (built from this repository) against an in-process kfake
// cluster and a real redis-server, and drives them over HTTP.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/redistest"
)

// services are the binaries the request path needs.
var services = []string{"ingress", "contentsafety", "inference"}

// reviewService is built beside services; a stack runs it only when a test
// asks for it (startStackWith).
const reviewService = "review"

// batchService is built beside services too; the batch tests run it.
const batchService = "batch"

// batchStack is the request path with the batch service.
var batchStack = append(slices.Clone(services), batchService)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "terroir-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	root, err := repoRoot()
	if err == nil {
		args := []string{"build", "-o", dir + string(filepath.Separator)}
		for _, s := range append(slices.Clone(services), reviewService, batchService) {
			args = append(args, "./services/"+s)
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		err = cmd.Run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "building services:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.work not found")
		}
		dir = parent
	}
}

const operatorToken = "e2e-operator-token-0123456789"

// stack is one running set of services.
type stack struct {
	t          *testing.T
	base       string
	env        map[string]string
	logs       *syncBuffer
	perService map[string]map[string]string
	procs      map[string]*proc
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startStack starts the services on fresh infrastructure; perService
// sets variables of one service.
func startStack(t *testing.T, perService map[string]map[string]string) *stack {
	t.Helper()
	return startStackWith(t, services, perService)
}

// startStackWith is startStack running the services names (each one
// built by TestMain) instead of the request path's.
func startStackWith(t *testing.T, names []string, perService map[string]map[string]string) *stack {
	t.Helper()
	c := bustest.New(t)
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, logs: &syncBuffer{}}
	s.env = map[string]string{
		"TERROIR_GEOS":            "eu,us",
		"TERROIR_KAFKA_BROKERS":   strings.Join(c.Brokers, ","),
		"TERROIR_KAFKA_NAMESPACE": bustest.Namespace(),
		"TERROIR_KEY_FILE":        c.KeyFile,
		"TERROIR_TOPICS_FILE":     filepath.Join(root, "deployments", "topics.yaml"),
		"TERROIR_CATALOG_FILE":    filepath.Join(root, "deployments", "catalog.yaml"),
		"TERROIR_REDIS_ADDR":      redistest.Start(t),
		"TERROIR_LOG_FORMAT":      "json",
		"TERROIR_LOG_LEVEL":       "info",
		"TERROIR_OPERATOR_TOKEN":  operatorToken,
		"TERROIR_HTTP_ADDR":       freeAddr(t),
		"TERROIR_BLOB_DIR":        t.TempDir(),
		"TERROIR_BATCH_DROPS_DIR": t.TempDir(),
	}
	s.base = "http://" + s.env["TERROIR_HTTP_ADDR"]
	s.perService = perService
	s.procs = map[string]*proc{}
	var admins []string
	for _, name := range names {
		admins = append(admins, s.launch(name))
	}
	s.waitReady(admins...)
	return s
}

// proc is one running service process.
type proc struct {
	cmd   *exec.Cmd
	admin string
	done  chan struct{}
}

// launch starts service name (again) and returns its admin address.
func (s *stack) launch(name string) string {
	t := s.t
	t.Helper()
	env := os.Environ()
	for k, v := range s.env {
		env = append(env, k+"="+v)
	}
	admin := freeAddr(t)
	env = append(env, "TERROIR_ADMIN_ADDR="+admin, "TERROIR_INSTANCE_ID="+name+"-"+s.env["TERROIR_KAFKA_NAMESPACE"])
	for k, v := range s.perService[name] {
		env = append(env, k+"="+v)
	}
	cmd := exec.Command(filepath.Join(binDir, name))
	cmd.Env, cmd.Stdout, cmd.Stderr = env, s.logs, s.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, admin: admin, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	s.procs[name] = p
	t.Cleanup(func() {
		select {
		case <-p.done:
			return // killed by the test
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("%s did not stop on SIGTERM", name)
		}
	})
	return admin
}

// kill stops service name at once (SIGKILL: no draining, no commits).
func (s *stack) kill(name string) {
	s.t.Helper()
	p := s.procs[name]
	_ = p.cmd.Process.Kill()
	<-p.done
}

// restart starts a killed service again and waits until it is ready.
func (s *stack) restart(name string) {
	s.t.Helper()
	s.waitReady(s.launch(name))
}

// waitReady waits until every admin address answers /readyz.
func (s *stack) waitReady(admins ...string) {
	t := s.t
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for _, a := range admins {
		for {
			resp, err := http.Get("http://" + a + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("services not ready within 90 s; logs:\n%s", s.logs.String())
			}
			time.Sleep(50 * time.Millisecond) // polling with a deadline
		}
	}
}

type resp struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (s *stack) call(method, path, cred string, body any) resp {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		if str, ok := body.(string); ok {
			rd = strings.NewReader(str)
		} else {
			raw, _ := json.Marshal(body)
			rd = bytes.NewReader(raw)
		}
	}
	ctx, cancel := context.WithTimeout(s.t.Context(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, s.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+cred)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer r.Body.Close()
	out := resp{status: r.StatusCode, header: r.Header}
	out.raw, _ = io.ReadAll(r.Body)
	_ = json.Unmarshal(out.raw, &out.body)
	return out
}

func (s *stack) op(method, path string, body any, want int) resp {
	s.t.Helper()
	r := s.call(method, path, operatorToken, body)
	if r.status != want {
		s.t.Fatalf("%s %s = %d, want %d: %s", method, path, r.status, want, r.raw)
	}
	return r
}

// tenant creates a resource with chat and embedding deployments and
// returns its key.
func (s *stack) tenant(name, location string, logging bool) string {
	s.t.Helper()
	s.op("PUT", "/mgmt/resources/"+name, map[string]any{"location": location, "properties": map[string]any{
		"abuseMonitoring": map[string]any{"optOutApproved": !logging, "contentLogging": logging}}}, http.StatusCreated)
	s.op("PUT", "/mgmt/resources/"+name+"/deployments/chat", map[string]any{"sku": map[string]any{"name": "Standard", "capacity": 100},
		"properties": map[string]any{"model": map[string]any{"name": "terroir-ngram"}}}, http.StatusCreated)
	s.op("PUT", "/mgmt/resources/"+name+"/deployments/embed", map[string]any{"sku": map[string]any{"name": "Standard", "capacity": 100},
		"properties": map[string]any{"model": map[string]any{"name": "terroir-embed"}}}, http.StatusCreated)
	return s.op("POST", "/mgmt/resources/"+name+"/listKeys", nil, http.StatusOK).body["key1"].(string)
}

// filteringDeployment makes a chat deployment whose outputs are bound to
// be filtered: a completion-side blocklist of "the" and "and", applied by
// the content-filter policy "strict". want is the status of the
// deployment's PUT (201 when new, 200 when it replaces one).
func (s *stack) filteringDeployment(resource, name string, want int) {
	s.t.Helper()
	s.op("PUT", "/mgmt/resources/"+resource+"/blocklists/articles", map[string]any{"properties": map[string]any{
		"blocklistItems": []any{map[string]any{"pattern": "the"}, map[string]any{"pattern": "and"}}}}, http.StatusCreated)
	s.op("PUT", "/mgmt/resources/"+resource+"/contentFilterPolicies/strict", map[string]any{"properties": map[string]any{
		"customBlocklists": []any{map[string]any{"blocklistName": "articles", "source": "Completion"}}}}, http.StatusCreated)
	s.op("PUT", "/mgmt/resources/"+resource+"/deployments/"+name, map[string]any{"sku": map[string]any{"name": "Standard", "capacity": 100},
		"properties": map[string]any{"model": map[string]any{"name": "terroir-ngram"}, "raiPolicyName": "strict"}}, want)
}
