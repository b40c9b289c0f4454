// Package logging builds Terroir's zap loggers and the one sanctioned way
// to refer to customer content in a log line: its size and a short hash,
// never the text (promise 7).
package logging

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a logger named for service: JSON for production ("json"),
// human-readable for development ("console").
func New(service, format, level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	var cfg zap.Config
	switch format {
	case "json":
		cfg = zap.NewProductionConfig()
		cfg.EncoderConfig.TimeKey = "ts"
		cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
		cfg.DisableStacktrace = true
	default:
		return nil, fmt.Errorf("log format %q: want json or console", format)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Sampling = nil
	l, err := cfg.Build()
	if err != nil {
		return nil, fmt.Errorf("building logger: %w", err)
	}
	return l.Named(service).With(zap.String("service", service)), nil
}

// Content describes customer content in a log line by its length and the
// first 12 hex digits of its SHA-256, which lets lines about the same
// content be correlated without revealing it.
func Content(key string, text []byte) zap.Field {
	sum := sha256.Sum256(text)
	return zap.Dict(key, zap.Int("bytes", len(text)), zap.String("sha256_12", hex.EncodeToString(sum[:6])))
}
