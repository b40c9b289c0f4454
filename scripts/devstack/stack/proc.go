package stack

import (
	"fmt"
	"os/exec"
	"sync"
	"time"
)

// ProcSpec says how to start one child process.
type ProcSpec struct {
	// Name labels the process in messages and prefixes its output lines.
	Name string
	// Path is the executable; Args are its arguments (without the name).
	Path string
	Args []string
	// Dir is the working directory; Env the complete environment.
	Dir string
	Env []string
	// Out receives the process's stdout and stderr, line by line.
	Out *LineWriter
}

// Proc is a running child process in a process group of its own, so a Ctrl-C
// in the terminal reaches only the launcher, which then stops its children
// in order.
type Proc struct {
	name string
	cmd  *exec.Cmd
	out  *LineWriter
	done chan struct{}

	mu  sync.Mutex
	err error
}

// StartProc starts the process described by spec.
func StartProc(spec ProcSpec) (*Proc, error) {
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Dir = spec.Dir
	cmd.Env = spec.Env
	if spec.Out != nil {
		// One writer for both streams: exec then uses a single pipe, so
		// the order of stdout and stderr lines is kept.
		cmd.Stdout = spec.Out
		cmd.Stderr = spec.Out
	}
	cmd.SysProcAttr = childProcAttr()
	// A grandchild holding the output pipe open must not keep Wait from
	// returning once the process itself has exited.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", spec.Name, err)
	}
	p := &Proc{name: spec.Name, cmd: cmd, out: spec.Out, done: make(chan struct{})}
	go p.wait()
	return p, nil
}

func (p *Proc) wait() {
	err := p.cmd.Wait()
	if p.out != nil {
		_ = p.out.Close()
	}
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
	close(p.done)
}

// Name returns the name the process was started with.
func (p *Proc) Name() string { return p.name }

// Pid returns the process ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited and its output is flushed.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err returns the exit error once Done is closed: nil for exit status 0, an
// *exec.ExitError otherwise. Before that it returns nil.
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitStatus describes how an exited process ended, e.g. "exit status 0",
// "exit status 2" or "signal: killed".
func (p *Proc) ExitStatus() string {
	if !p.Exited() {
		return "running"
	}
	if err := p.Err(); err != nil {
		return err.Error()
	}
	return "exit status 0"
}

// Terminate asks the process (and its group) to stop.
func (p *Proc) Terminate() error {
	if p.Exited() {
		return nil
	}
	return terminate(p.cmd.Process)
}

// Kill stops the process (and its group) at once.
func (p *Proc) Kill() error {
	if p.Exited() {
		return nil
	}
	return kill(p.cmd.Process)
}

// Stop terminates the process and waits up to timeout for it to exit, then
// kills it. It returns nil only when the process exited with status 0 within
// the timeout.
func (p *Proc) Stop(timeout time.Duration) error {
	if err := p.Terminate(); err != nil && !p.Exited() {
		return fmt.Errorf("stopping %s: %w", p.name, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		if err := p.Err(); err != nil {
			return fmt.Errorf("%s exited with %w", p.name, err)
		}
		return nil
	case <-timer.C:
	}
	_ = p.Kill()
	<-p.done
	return fmt.Errorf("%s did not stop within %s and was killed", p.name, timeout)
}
