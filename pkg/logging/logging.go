// Package logging builds Terroir's zap loggers and the one sanctioned way
// to refer to customer content in a log line: its size and a short hash,
// never the text (promise 7).
package logging

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a logger named for service: JSON for production ("json"),
// human-readable for development ("console"), each line written to stderr
// as it is logged.
func New(service, format, level string) (*zap.Logger, error) {
	return NewBuffered(service, format, level, 0)
}

// NewBuffered is New with the lines gathered for up to flush (or 256 KiB)
// and written together: on a busy request path, one write a line is a
// system call a request, and another in whatever reads the stream. Lines
// above error level (DPanic, Panic, Fatal) write out at once, and Flush
// writes out every logger's gathered lines. flush 0 writes each line.
func NewBuffered(service, format, level string, flush time.Duration) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	var enc zapcore.Encoder
	opts := []zap.Option{zap.ErrorOutput(zapcore.Lock(os.Stderr)), zap.AddCaller()}
	switch format {
	case "json":
		ec := zap.NewProductionEncoderConfig()
		ec.TimeKey = "ts"
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
		opts = append(opts, zap.AddStacktrace(zapcore.ErrorLevel))
	case "console":
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
		opts = append(opts, zap.Development())
	default:
		return nil, fmt.Errorf("log format %q: want json or console", format)
	}
	var out zapcore.WriteSyncer = zapcore.Lock(os.Stderr)
	if flush > 0 {
		g := newGatherer(out, flush, 256<<10)
		flushMu.Lock()
		flushers = append(flushers, g)
		flushMu.Unlock()
		out = g
	}
	l := zap.New(zapcore.NewCore(enc, out, zap.NewAtomicLevelAt(lvl)), opts...)
	return l.Named(service).With(zap.String("service", service)), nil
}

var (
	flushMu  sync.Mutex
	flushers []*gatherer
)

// Flush writes out what the loggers of NewBuffered have gathered; a
// process calls it before it exits.
func Flush() {
	flushMu.Lock()
	defer flushMu.Unlock()
	for _, b := range flushers {
		_ = b.Sync()
	}
}

// Content describes customer content in a log line by its length and the
// first 12 hex digits of its SHA-256, which lets lines about the same
// content be correlated without revealing it.
func Content(key string, text []byte) zap.Field {
	sum := sha256.Sum256(text)
	return zap.Dict(key, zap.Int("bytes", len(text)), zap.String("sha256_12", hex.EncodeToString(sum[:6])))
}
