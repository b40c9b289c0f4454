package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/pkg/tlsfiles"
	"github.com/terroir-ai/terroir/services/ingress/batches"
	"github.com/terroir-ai/terroir/services/ingress/edge"
	"github.com/terroir-ai/terroir/services/ingress/files"
)

// Config is ingress's own configuration, beside the shared one.
type Config struct {
	// HTTPAddr is where the REST API listens (TERROIR_HTTP_ADDR,
	// default 127.0.0.1:8080).
	HTTPAddr string
	// TLSCertFile and TLSKeyFile, when set (both or neither), make the
	// REST API serve HTTPS only, TLS 1.2 or newer, with this certificate
	// and key (PEM), read again whenever the files change
	// (TERROIR_HTTP_TLS_CERT_FILE, TERROIR_HTTP_TLS_KEY_FILE).
	TLSCertFile, TLSKeyFile string
	// PublicURL is the API's base URL as apps reach it, shown as each
	// resource's endpoint; "{name}" stands for the resource name
	// (TERROIR_PUBLIC_URL, default http://127.0.0.1:8080/, https:// when
	// the API serves TLS).
	PublicURL string
	// OperatorToken authenticates the management API
	// (TERROIR_OPERATOR_TOKEN, or the first line of the file
	// TERROIR_OPERATOR_TOKEN_FILE names); at least 16 characters. Unset,
	// the management API refuses operators.
	OperatorToken string
	// CatalogFile is the model catalog (TERROIR_CATALOG_FILE, default
	// deployments/catalog.yaml).
	CatalogFile string
	// MgmtMaxBody bounds management request bodies, in bytes
	// (TERROIR_MGMT_MAX_BODY_BYTES, default 4 MiB).
	MgmtMaxBody int64
	// MaxBody bounds app request bodies, in bytes
	// (TERROIR_MAX_BODY_BYTES, default 8 MiB); larger gets 413.
	MaxBody int64
	// RequestTimeout bounds an app request from acceptance to its last
	// reply (TERROIR_REQUEST_TIMEOUT, default 120s); then 504.
	RequestTimeout time.Duration
	// MaxFileBytes bounds an uploaded file (TERROIR_FILES_MAX_BYTES,
	// default 512 MiB) and MaxBatchFileBytes one of purpose batch
	// (TERROIR_FILES_MAX_BATCH_BYTES, default 200 MiB); larger gets 413.
	MaxFileBytes, MaxBatchFileBytes int64
	// MaxEnqueuedTokens bounds the estimated input tokens (input file
	// bytes / 4) of a resource's unfinished batches; a batch created past
	// it gets 400 token_limit_exceeded at once
	// (TERROIR_BATCH_MAX_ENQUEUED_TOKENS, default 5,000,000,000).
	MaxEnqueuedTokens int64
	// HTTP bounds slow and hostile clients: TERROIR_HTTP_READ_HEADER_TIMEOUT
	// (10s, at most the read timeout), TERROIR_HTTP_READ_TIMEOUT (30s: headers and body; a body
	// still arriving then gets 408), TERROIR_HTTP_WRITE_TIMEOUT (30s: a
	// response of the management API as a whole; each write of an app
	// answer, one streamed event or a whole JSON body, so that a stream
	// lasts as long as the model writes but a client that stops reading
	// is cut off), TERROIR_HTTP_IDLE_TIMEOUT (2m) and
	// TERROIR_HTTP_MAX_HEADER_BYTES (64 KiB; more gets 431).
	HTTP edge.Limits
}

func loadConfig(env *config.Env) Config {
	c := Config{
		HTTPAddr:          env.String("TERROIR_HTTP_ADDR", "127.0.0.1:8080"),
		TLSCertFile:       env.Lookup("TERROIR_HTTP_TLS_CERT_FILE"),
		TLSKeyFile:        env.Lookup("TERROIR_HTTP_TLS_KEY_FILE"),
		CatalogFile:       env.String("TERROIR_CATALOG_FILE", "deployments/catalog.yaml"),
		MgmtMaxBody:       int64(env.Int("TERROIR_MGMT_MAX_BODY_BYTES", 4<<20, 1<<10, 64<<20)),
		MaxBody:           int64(env.Int("TERROIR_MAX_BODY_BYTES", 8<<20, 1<<10, 256<<20)),
		RequestTimeout:    env.Duration("TERROIR_REQUEST_TIMEOUT", 120*time.Second),
		MaxFileBytes:      int64(env.Int("TERROIR_FILES_MAX_BYTES", files.DefaultMaxBytes, 1, 1<<40)),
		MaxBatchFileBytes: int64(env.Int("TERROIR_FILES_MAX_BATCH_BYTES", files.DefaultMaxBatchBytes, 1, 1<<40)),
		MaxEnqueuedTokens: int64(env.Int("TERROIR_BATCH_MAX_ENQUEUED_TOKENS", batches.DefaultMaxEnqueuedTokens, 1, 1<<53)),
		HTTP: edge.Limits{
			ReadTimeout:    env.Duration("TERROIR_HTTP_READ_TIMEOUT", 30*time.Second),
			WriteTimeout:   env.Duration("TERROIR_HTTP_WRITE_TIMEOUT", 30*time.Second),
			IdleTimeout:    env.Duration("TERROIR_HTTP_IDLE_TIMEOUT", 2*time.Minute),
			MaxHeaderBytes: env.Int("TERROIR_HTTP_MAX_HEADER_BYTES", 64<<10, 1<<10, 1<<20),
		},
	}
	c.HTTP.ReadHeaderTimeout = env.Duration("TERROIR_HTTP_READ_HEADER_TIMEOUT", min(10*time.Second, c.HTTP.ReadTimeout))
	if c.HTTP.ReadHeaderTimeout > c.HTTP.ReadTimeout {
		env.Fail("TERROIR_HTTP_READ_HEADER_TIMEOUT", errors.New("must not be longer than TERROIR_HTTP_READ_TIMEOUT, which bounds the headers too"))
	}
	switch {
	case c.TLSCertFile != "" && c.TLSKeyFile == "":
		env.Fail("TERROIR_HTTP_TLS_KEY_FILE", errors.New("required with TERROIR_HTTP_TLS_CERT_FILE"))
	case c.TLSCertFile == "" && c.TLSKeyFile != "":
		env.Fail("TERROIR_HTTP_TLS_CERT_FILE", errors.New("required with TERROIR_HTTP_TLS_KEY_FILE"))
	}
	defaultURL := "http://127.0.0.1:8080/"
	if c.TLSCertFile != "" {
		defaultURL = "https://127.0.0.1:8080/"
	}
	c.PublicURL = env.String("TERROIR_PUBLIC_URL", defaultURL)
	c.OperatorToken = env.Lookup("TERROIR_OPERATOR_TOKEN")
	if f := env.Lookup("TERROIR_OPERATOR_TOKEN_FILE"); f != "" {
		if c.OperatorToken != "" {
			env.Fail("TERROIR_OPERATOR_TOKEN_FILE", errors.New("set either TERROIR_OPERATOR_TOKEN or TERROIR_OPERATOR_TOKEN_FILE, not both"))
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			env.Fail("TERROIR_OPERATOR_TOKEN_FILE", err)
		}
		c.OperatorToken, _, _ = strings.Cut(strings.TrimSpace(string(raw)), "\n")
	}
	if c.OperatorToken != "" && len(c.OperatorToken) < 16 {
		env.Fail("TERROIR_OPERATOR_TOKEN", errors.New("the operator token must be at least 16 characters"))
	}
	return c
}

// serverTLS returns the REST API's TLS configuration, or nil when it
// serves plain HTTP (behind a TLS-terminating proxy, or in development).
func (c Config) serverTLS() (*tls.Config, error) {
	if c.TLSCertFile == "" {
		return nil, nil
	}
	cfg, err := tlsfiles.Server(c.TLSCertFile, c.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("TERROIR_HTTP_TLS_CERT_FILE, TERROIR_HTTP_TLS_KEY_FILE: %w", err)
	}
	return cfg, nil
}
