package watch

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/pkg/daemon"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/keys"
	"github.com/terroir-ai/terroir/pkg/openai"
	"github.com/terroir-ai/terroir/services/batch/drops"
)

// ErrUsage marks bad arguments.
var ErrUsage = errors.New("usage: batch watch -resource R <batch id | drop file | status.json>")

// Source reads the current progress of one batch; ok is false while the
// batch is not (yet) there.
type Source func(ctx context.Context) (p Progress, ok bool, err error)

// Run is `batch watch`: args are its flags and its one argument. A batch
// ID is read from the batches stream (bus configuration from the same
// TERROIR_* variables as the service); a path is a drop file (in inbox/,
// processed/) or its status file, whose outbox/<name>.status.json is
// read. It draws the bar on out until the batch ends.
func Run(ctx context.Context, getenv func(string) string, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("batch watch", flag.ContinueOnError)
	fs.SetOutput(out)
	resource := fs.String("resource", "", "the resource that owns the batch (required for a batch ID)")
	every := fs.Duration("interval", 500*time.Millisecond, "how often the bar is redrawn")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if fs.NArg() != 1 || *every <= 0 {
		return ErrUsage
	}
	target := fs.Arg(0)
	var src Source
	if strings.HasPrefix(target, "batch_") && !strings.ContainsAny(target, "/.") {
		if *resource == "" {
			return fmt.Errorf("%w: -resource is required for a batch ID", ErrUsage)
		}
		s, closeFn, err := streamSource(ctx, getenv, *resource, target)
		if err != nil {
			return err
		}
		defer closeFn()
		src = s
	} else {
		src = FileSource(StatusPath(target))
	}
	return Loop(ctx, src, out, isTerminal(out), *every, time.Now)
}

// Loop reads src every interval and draws the bar until the batch ends:
// redrawn in place on a terminal, a line per change otherwise.
func Loop(ctx context.Context, src Source, out io.Writer, tty bool, every time.Duration, now func() time.Time) error {
	var m Meter
	last := ""
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		p, ok, err := src(ctx)
		if err != nil {
			return err
		}
		if ok {
			p.At = now()
			m.Add(p)
			left, known := m.Left()
			line := Render(p, m.Rate(), left, known, 30)
			switch {
			case tty:
				fmt.Fprint(out, "\r\x1b[K"+line)
			case line != last:
				fmt.Fprintln(out, line)
			}
			last = line
			if events.BatchStatus(p.Status).Terminal() {
				if tty {
					fmt.Fprintln(out)
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprintln(out)
			}
			return nil
		case <-tick.C:
		}
	}
}

// StatusPath returns the status file of a drop given the drop file (in
// inbox/ or processed/), its status file, or one of its outbox files.
func StatusPath(p string) string {
	if strings.HasSuffix(p, ".status.json") {
		return p
	}
	base := filepath.Base(p)
	for _, suf := range []string{".output.jsonl", ".errors.jsonl", ".jsonl"} {
		if strings.HasSuffix(base, suf) {
			base = strings.TrimSuffix(base, suf)
			break
		}
	}
	loc := filepath.Dir(filepath.Dir(p))
	return filepath.Join(loc, "outbox", base+".status.json")
}

// FileSource reads a drop's status file; a file not written yet is not
// an error (the drop may still be settling).
func FileSource(path string) Source {
	return func(context.Context) (Progress, bool, error) {
		raw, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			return Progress{}, false, nil
		}
		if err != nil {
			return Progress{}, false, err
		}
		var b openai.Batch
		if err := json.Unmarshal(raw, &b); err != nil {
			return Progress{}, false, nil // caught mid-write by a writer that does not rename: read again
		}
		return Progress{Status: string(b.Status), Total: b.RequestCounts.Total, Completed: b.RequestCounts.Completed, Failed: b.RequestCounts.Failed}, true, nil
	}
}

// streamSource follows the batch on the batches stream of every
// geography configured (the batch lives in its resource's home one).
func streamSource(ctx context.Context, getenv func(string) string, resource, id string) (Source, func(), error) {
	env := config.New(getenv)
	common := daemon.LoadConfig(env, "batch-watch", "127.0.0.1:0")
	if err := env.Err(); err != nil {
		return nil, nil, err
	}
	wrapper, err := keys.LoadKeyFile(common.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("TERROIR_KEY_FILE: %w", err)
	}
	b, err := bus.New(ctx, bus.Config{Namespace: common.Namespace, Brokers: common.Brokers, Security: common.KafkaSecurity,
		InstanceID: common.InstanceID, KeyWrapper: wrapper})
	if err != nil {
		return nil, nil, err
	}
	var (
		mu  sync.Mutex
		cur *events.BatchObject
	)
	key := drops.BatchKey(resource, id)
	var tables []*bus.Table
	closeAll := func() {
		for _, t := range tables {
			t.Close()
		}
		b.Close()
	}
	for _, g := range common.Geos {
		t, err := b.NewTable(g, bus.StreamBatches, func(d *bus.Delivery) {
			if string(d.Record.Key) != key || d.Record.Value == nil {
				return
			}
			var o events.BatchObject
			if d.Decode(context.Background(), &o) != nil {
				return
			}
			mu.Lock()
			if cur == nil || o.Version >= cur.Version {
				cur = &o
			}
			mu.Unlock()
		})
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		tables = append(tables, t)
	}
	return func(context.Context) (Progress, bool, error) {
		mu.Lock()
		defer mu.Unlock()
		if cur == nil {
			return Progress{}, false, nil
		}
		return Progress{Status: string(cur.Status), Total: cur.RequestCounts.Total, Completed: cur.RequestCounts.Completed, Failed: cur.RequestCounts.Failed}, true, nil
	}, closeAll, nil
}

// isTerminal reports whether w is a terminal (the bar is then redrawn in
// place).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
