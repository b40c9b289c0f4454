// Package tlsfiles builds the TLS configurations Terroir's connections
// use from PEM files: a client side for Kafka and Redis (a CA to trust, a
// certificate for mutual TLS, the name to expect) and a server side whose
// certificate is read again when its files change, so a renewed
// certificate is served without a restart. Both accept TLS 1.2 or newer
// only.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/terroir-ai/terroir/pkg/config"
)

// MinVersion is the oldest protocol version Terroir speaks or accepts.
const MinVersion = tls.VersionTLS12

// Client describes the client side of a TLS connection. The zero value
// with Enabled set trusts the system's roots.
type Client struct {
	// Enabled turns TLS on; setting any file or the server name does too.
	Enabled bool
	// CAFile holds the PEM certificates to trust instead of the system's.
	CAFile string
	// CertFile and KeyFile are the client's own certificate and key (PEM),
	// for servers that ask for one (mutual TLS); both or neither.
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must carry; default
	// the host dialled.
	ServerName string
}

// On reports whether c asks for TLS.
func (c Client) On() bool {
	return c.Enabled || c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" || c.ServerName != ""
}

// Config returns the tls.Config of c, or nil when c does not ask for TLS.
func (c Client) Config() (*tls.Config, error) {
	if !c.On() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: MinVersion, ServerName: c.ServerName}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", c.CAFile)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("a client certificate needs both its certificate and its key file")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// ClientsFromEnv reads the client TLS settings of every geography from
// prefix_TLS (1 turns TLS on with the system's roots), prefix_TLS_CA_FILE,
// prefix_TLS_CERT_FILE, prefix_TLS_KEY_FILE and prefix_TLS_SERVER_NAME,
// each also in its per-geography form (prefix_TLS_CA_FILE_EU), and builds
// their configurations; a geography without TLS maps to nil. Problems are
// recorded on env, naming the variable.
func ClientsFromEnv(env *config.Env, prefix string, geos []string) map[string]*tls.Config {
	on := env.PerGeo(prefix+"_TLS", geos, "0")
	ca := env.PerGeo(prefix+"_TLS_CA_FILE", geos, "")
	cert := env.PerGeo(prefix+"_TLS_CERT_FILE", geos, "")
	key := env.PerGeo(prefix+"_TLS_KEY_FILE", geos, "")
	name := env.PerGeo(prefix+"_TLS_SERVER_NAME", geos, "")
	out := make(map[string]*tls.Config, len(geos))
	for _, g := range geos {
		suffix := "_" + strings.ToUpper(g)
		if on[g] != "0" && on[g] != "1" {
			env.Fail(prefix+"_TLS"+suffix, fmt.Errorf("%q is neither 0 nor 1", on[g]))
		}
		c := Client{Enabled: on[g] == "1", CAFile: ca[g], CertFile: cert[g], KeyFile: key[g], ServerName: name[g]}
		cfg, err := c.Config()
		if err != nil {
			env.Fail(prefix+"_TLS_*"+suffix, err)
			continue
		}
		out[g] = cfg
	}
	return out
}

// Server returns a server configuration that serves the certificate in
// certFile and keyFile (PEM) and reads them again when either file
// changes (its modification time or size), so a renewed certificate is
// served from the next handshake on. While a renewal is half written the
// previous certificate stays in use. The files must hold a valid pair
// now.
func Server(certFile, keyFile string) (*tls.Config, error) {
	r := &reloader{certFile: certFile, keyFile: keyFile}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: MinVersion, GetCertificate: r.get}, nil
}

type reloader struct {
	certFile, keyFile string

	mu    sync.Mutex
	cert  *tls.Certificate
	stamp [2]fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// load reads the pair when its files changed since the last load.
func (r *reloader) load() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cs, cerr := stamp(r.certFile)
	ks, kerr := stamp(r.keyFile)
	if err := errors.Join(cerr, kerr); err != nil {
		if r.cert != nil {
			return r.cert, nil
		}
		return nil, fmt.Errorf("reading TLS certificate: %w", err)
	}
	now := [2]fileStamp{cs, ks}
	if r.cert != nil && now == r.stamp {
		return r.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		if r.cert != nil {
			return r.cert, nil // mid-renewal: the next handshake tries again
		}
		return nil, fmt.Errorf("loading TLS certificate: %w", err)
	}
	r.cert, r.stamp = &cert, now
	return r.cert, nil
}

func (r *reloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return r.load() }
