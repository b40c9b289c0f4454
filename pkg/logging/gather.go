package logging

import (
	"sync"
	"time"

	"go.uber.org/zap/zapcore"
)

// gatherer holds log lines for up to wait, or until size bytes are held,
// and writes them to out together. Its timer runs only while it holds
// lines: an idle process is not woken to flush nothing.
type gatherer struct {
	out  zapcore.WriteSyncer
	wait time.Duration
	size int

	mu    sync.Mutex
	buf   []byte
	timer *time.Timer // armed while buf holds lines
}

func newGatherer(out zapcore.WriteSyncer, wait time.Duration, size int) *gatherer {
	return &gatherer{out: out, wait: wait, size: size}
}

func (g *gatherer) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.buf = append(g.buf, p...)
	if len(g.buf) >= g.size {
		return len(p), g.writeOut()
	}
	if g.timer == nil {
		g.timer = time.AfterFunc(g.wait, g.flushTimer)
	}
	return len(p), nil
}

// Sync writes out what is held and syncs the output; zap calls it after
// lines above error level.
func (g *gatherer) Sync() error {
	g.mu.Lock()
	err := g.writeOut()
	g.mu.Unlock()
	if serr := g.out.Sync(); err == nil {
		err = serr
	}
	return err
}

func (g *gatherer) flushTimer() {
	g.mu.Lock()
	defer g.mu.Unlock()
	_ = g.writeOut()
}

// writeOut writes what is held and disarms the timer; g.mu is held.
func (g *gatherer) writeOut() error {
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
	if len(g.buf) == 0 {
		return nil
	}
	_, err := g.out.Write(g.buf)
	g.buf = g.buf[:0]
	return err
}
