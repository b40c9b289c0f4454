// Package pki issues the certificates of the review console's secure
// workstations: a review certificate authority (ECDSA P-256), the
// console's server certificate, and one client certificate per person,
// whose Subject CommonName is the person's name in the people directory.
// Keys and certificates are written as PEM files (PKCS #8 keys, mode 0600).
//
// It is meant for development stacks and tests; production deployments
// issue these certificates from their own CA.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	// CAValidity is how long a new CA is valid.
	CAValidity = 5 * 365 * 24 * time.Hour
	// LeafValidity is how long issued server and client certificates are
	// valid (within what browsers accept for server certificates).
	LeafValidity = 365 * 24 * time.Hour
	// backdate absorbs clock skew between the issuing and the verifying
	// machine.
	backdate = 5 * time.Minute
)

// DefaultServerHosts are the names a server certificate covers when none
// are given: the console's loopback addresses.
var DefaultServerHosts = []string{"127.0.0.1", "localhost", "::1"}

// Pair is an issued certificate and its private key.
type Pair struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// CertPEM and KeyPEM are the PEM encodings (CERTIFICATE and a PKCS #8
	// PRIVATE KEY).
	CertPEM, KeyPEM []byte
}

// CA is a certificate authority that issues server and client
// certificates.
type CA struct {
	Pair
}

// NewCA creates a self-signed CA whose Subject CommonName is name.
func NewCA(name string) (*CA, error) {
	if strings.TrimSpace(name) == "" {
		return nil, errors.New("pki: a CA needs a name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generating the CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	p, err := sign(tmpl, tmpl, key, key)
	if err != nil {
		return nil, fmt.Errorf("pki: creating CA %q: %w", name, err)
	}
	return &CA{Pair: p}, nil
}

// LoadCA reads a CA written by WritePEM (or any ECDSA CA with a PKCS #8 or
// SEC 1 key), so a development stack keeps its CA across runs.
func LoadCA(certFile, keyFile string) (*CA, error) {
	p, err := LoadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if !p.Cert.IsCA {
		return nil, fmt.Errorf("pki: %s is not a CA certificate", certFile)
	}
	return &CA{Pair: p}, nil
}

// LoadPair reads a PEM certificate and its ECDSA private key.
func LoadPair(certFile, keyFile string) (Pair, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return Pair{}, fmt.Errorf("pki: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return Pair{}, fmt.Errorf("pki: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return Pair{}, fmt.Errorf("pki: %s holds no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return Pair{}, fmt.Errorf("pki: parsing %s: %w", certFile, err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return Pair{}, fmt.Errorf("pki: %s holds no PEM key", keyFile)
	}
	var key *ecdsa.PrivateKey
	switch kb.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
		if err != nil {
			return Pair{}, fmt.Errorf("pki: parsing %s: %w", keyFile, err)
		}
		var ok bool
		if key, ok = k.(*ecdsa.PrivateKey); !ok {
			return Pair{}, fmt.Errorf("pki: %s is not an ECDSA key", keyFile)
		}
	case "EC PRIVATE KEY":
		if key, err = x509.ParseECPrivateKey(kb.Bytes); err != nil {
			return Pair{}, fmt.Errorf("pki: parsing %s: %w", keyFile, err)
		}
	default:
		return Pair{}, fmt.Errorf("pki: %s holds a %s, not an ECDSA private key", keyFile, kb.Type)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return Pair{}, fmt.Errorf("pki: the key in %s does not belong to the certificate in %s", keyFile, certFile)
	}
	return Pair{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// Server issues a server certificate for hosts (IP addresses or DNS
// names; DefaultServerHosts when none are given).
func (ca *CA) Server(hosts ...string) (Pair, error) {
	if len(hosts) == 0 {
		hosts = DefaultServerHosts
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			return Pair{}, errors.New("pki: empty host name")
		}
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(tmpl)
}

// Client issues a client certificate whose Subject CommonName is name,
// the person's name in the people directory.
func (ca *CA) Client(name string) (Pair, error) {
	if strings.TrimSpace(name) == "" {
		return Pair{}, errors.New("pki: a client certificate needs a person's name")
	}
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

func (ca *CA) issue(tmpl *x509.Certificate) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, fmt.Errorf("pki: generating a key: %w", err)
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return Pair{}, err
	}
	now := time.Now()
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(LeafValidity)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	p, err := sign(tmpl, ca.Cert, key, ca.Key)
	if err != nil {
		return Pair{}, fmt.Errorf("pki: issuing %q: %w", tmpl.Subject.CommonName, err)
	}
	return p, nil
}

// Pool returns a certificate pool holding the CA: the console's client
// CAs, or a client's root CAs.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// TLSCertificate returns the pair for a tls.Config.
func (p Pair) TLSCertificate() (tls.Certificate, error) {
	return tls.X509KeyPair(p.CertPEM, p.KeyPEM)
}

// WritePEM writes the CA's certificate and key to dir as ca.pem and
// ca-key.pem, and returns their paths.
func (ca *CA) WritePEM(dir string) (certFile, keyFile string, err error) {
	return ca.Pair.WritePEM(dir, "ca")
}

// WritePEM writes the pair to dir as <name>.pem and <name>-key.pem (the
// key readable by its owner only), creating dir, and returns their paths.
func (p Pair) WritePEM(dir, name string) (certFile, keyFile string, err error) {
	if name == "" || strings.ContainsAny(name, `/\`) {
		return "", "", fmt.Errorf("pki: %q is not a file name", name)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("pki: %w", err)
	}
	certFile = filepath.Join(dir, name+".pem")
	keyFile = filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(keyFile, p.KeyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("pki: %w", err)
	}
	if err := os.WriteFile(certFile, p.CertPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("pki: %w", err)
	}
	return certFile, keyFile, nil
}

func sign(tmpl, parent *x509.Certificate, key, signer *ecdsa.PrivateKey) (Pair, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return Pair{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Pair{}, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Pair{}, err
	}
	return Pair{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	}, nil
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: generating a serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
