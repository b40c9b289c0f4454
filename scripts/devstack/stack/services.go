package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Service is one process of a Terroir service the dev stack builds and
// runs.
type Service struct {
	// Name names the process; for the first instance of a service it is
	// the folder under services/ and the binary's name.
	Name string
	// Binary is the service the process runs, when it differs from Name
	// (another instance of it).
	Binary string
	// AdminAddr is the address of its /healthz, /readyz and /metrics.
	AdminAddr string
	// Env is what this process is given beside the stack's environment.
	Env map[string]string
}

// Bin returns the service the process runs.
func (s Service) Bin() string {
	if s.Binary != "" {
		return s.Binary
	}
	return s.Name
}

// Services returns the processes of the seven services, in the order
// they are started. Content safety and inference run twice: once for
// real-time requests, and once for the batch lane (bus.Lane) at the
// lowest CPU priority, so that batch lines use only the CPU real time
// leaves on the machine.
func Services() []Service {
	realtime := map[string]string{"TERROIR_LANES": "realtime"}
	// No producer linger on the batch lane: the pacer reads real time's
	// activity from the lane's round trips (the lane waits whenever real
	// time wants the CPU), and a linger would hide it (see the batch
	// README).
	batchLane := map[string]string{"TERROIR_LANES": "batch", "TERROIR_CPU_PRIORITY": "idle"}
	return []Service{
		{Name: "ingress", AdminAddr: "127.0.0.1:9101"},
		{Name: "contentsafety", AdminAddr: "127.0.0.1:9102", Env: realtime},
		{Name: "inference", AdminAddr: "127.0.0.1:9103", Env: realtime},
		{Name: "batch", AdminAddr: "127.0.0.1:9104", Env: map[string]string{"TERROIR_CPU_PRIORITY": "idle"}},
		{Name: "finetuning", AdminAddr: "127.0.0.1:9105"},
		{Name: "assistants", AdminAddr: "127.0.0.1:9106"},
		{Name: "review", AdminAddr: "127.0.0.1:9107"},
		{Name: "contentsafety-batch", Binary: "contentsafety", AdminAddr: "127.0.0.1:9108", Env: batchLane},
		{Name: "inference-batch", Binary: "inference", AdminAddr: "127.0.0.1:9109", Env: batchLane},
	}
}

// BuildError reports the services whose binaries did not build.
type BuildError struct {
	// Failed maps each service that did not build to the compiler's
	// output for it.
	Failed map[string]string
	// Order lists the failed services in build order.
	Order []string
}

func (e *BuildError) Error() string {
	var b strings.Builder
	for i, name := range e.Order {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "service %s did not build:", name)
		for _, line := range strings.Split(strings.TrimRight(e.Failed[name], "\n"), "\n") {
			b.WriteString("\n    " + line)
		}
	}
	return b.String()
}

// Build compiles every named service into binDir/<name>, running the go
// command from root so go.work ties the modules together. All services are
// built in one go invocation; if that fails, each is built alone to name the
// ones that do not build.
func Build(ctx context.Context, goCmd, root, binDir string, names []string) error {
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", binDir, err)
	}
	pkgs := make([]string, len(names))
	for i, n := range names {
		pkgs[i] = "./" + filepath.ToSlash(filepath.Join("services", n))
	}
	// A trailing separator makes -o a directory: one binary per package,
	// named after the package's folder.
	out, err := goBuild(ctx, goCmd, root, binDir+string(filepath.Separator), pkgs...)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("building services: %w", ctx.Err())
	}
	be := &BuildError{Failed: map[string]string{}}
	for i, n := range names {
		o, err := goBuild(ctx, goCmd, root, filepath.Join(binDir, n), pkgs[i])
		if ctx.Err() != nil {
			return fmt.Errorf("building services: %w", ctx.Err())
		}
		if err != nil {
			be.Failed[n] = o
			be.Order = append(be.Order, n)
		}
	}
	if len(be.Order) == 0 {
		// Each builds alone but not together; show what go said.
		return fmt.Errorf("building services: %w\n%s", err, out)
	}
	return be
}

func goBuild(ctx context.Context, goCmd, root, output string, pkgs ...string) (string, error) {
	args := append([]string{"build", "-o", output}, pkgs...)
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = root
	// Build in workspace mode whatever the caller's environment says.
	cmd.Env = MergeEnv(os.Environ(), map[string]string{"GOWORK": filepath.Join(root, "go.work")})
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	err := cmd.Run()
	return buf.String(), err
}

// MergeEnv returns base with every variable in set replaced or added.
func MergeEnv(base []string, set map[string]string) []string {
	env := make([]string, 0, len(base)+len(set))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; ok {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	return env
}

// Group is the set of running service processes.
type Group struct {
	procs  []*Proc
	exited chan *Proc
}

// NewGroup returns an empty Group that can track up to n processes.
func NewGroup(n int) *Group {
	return &Group{exited: make(chan *Proc, n)}
}

// Add starts the process described by spec as part of the group.
func (g *Group) Add(spec ProcSpec) (*Proc, error) {
	if len(g.procs) == cap(g.exited) {
		return nil, fmt.Errorf("starting %s: group is full (%d processes)", spec.Name, cap(g.exited))
	}
	p, err := StartProc(spec)
	if err != nil {
		return nil, err
	}
	g.procs = append(g.procs, p)
	go func() {
		<-p.Done()
		g.exited <- p
	}()
	return p, nil
}

// Procs returns the processes in start order.
func (g *Group) Procs() []*Proc { return g.procs }

// Exited receives each process of the group as it exits.
func (g *Group) Exited() <-chan *Proc { return g.exited }

// Stop sends SIGTERM to every running process, waits up to timeout for all
// of them, then kills the ones still running, calling onKill with each. It
// returns an error naming every process that was killed or exited with a
// non-zero status.
func (g *Group) Stop(timeout time.Duration, onKill func(*Proc)) error {
	for _, p := range g.procs {
		_ = p.Terminate()
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	killed := make(map[*Proc]bool)
	for _, p := range g.procs {
		select {
		case <-p.Done():
		case <-deadline.C:
			for _, q := range g.procs {
				if q.Exited() {
					continue
				}
				if onKill != nil {
					onKill(q)
				}
				_ = q.Kill()
				killed[q] = true
			}
		}
	}
	var errs []error
	for _, p := range g.procs {
		<-p.Done()
		switch {
		case killed[p]:
			errs = append(errs, fmt.Errorf("%s did not stop within %s and was killed", p.name, timeout))
		case p.Err() != nil:
			errs = append(errs, fmt.Errorf("%s exited with %w", p.name, p.Err()))
		}
	}
	return errors.Join(errs...)
}
