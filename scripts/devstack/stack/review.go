package stack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/terroir-ai/terroir/services/review/pki"
)

// ReviewPerson is a sample person of the dev stack's review console.
type ReviewPerson struct {
	Name, Role, Location string
	// Cert and Key are the person's client certificate and key, PEM files.
	Cert, Key string
}

// ReviewPKI is what the dev stack's review console needs: a review CA,
// the console's server certificate, a people directory and the client
// certificates of its sample people, all under Dir.
type ReviewPKI struct {
	Dir                   string
	CA, CAKey             string
	ServerCert, ServerKey string
	People                string
	Persons               []ReviewPerson
}

// samplePeople are the dev stack's reviewers and manager: an EEA reviewer
// and manager (who may handle eu records), and a US reviewer (who may
// not).
var samplePeople = []ReviewPerson{
	{Name: "rita.reviewer", Role: "reviewer", Location: "EEA"},
	{Name: "max.manager", Role: "manager", Location: "EEA"},
	{Name: "sam.reviewer", Role: "reviewer", Location: "US"},
}

// EnsureReviewPKI returns the review material under dir, creating what is
// missing: the CA once (kept across restarts, so imported certificates
// stay valid), certificates for the console and each sample person, and
// the people directory.
func EnsureReviewPKI(dir string) (*ReviewPKI, error) {
	r := &ReviewPKI{Dir: dir, CA: filepath.Join(dir, "ca.pem"), CAKey: filepath.Join(dir, "ca-key.pem"),
		ServerCert: filepath.Join(dir, "console.pem"), ServerKey: filepath.Join(dir, "console-key.pem"),
		People: filepath.Join(dir, "people.yaml")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	ca, err := pki.LoadCA(r.CA, r.CAKey)
	if errors.Is(err, os.ErrNotExist) {
		if ca, err = pki.NewCA("Terroir dev review CA"); err == nil {
			_, _, err = ca.WritePEM(dir)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("review CA in %s: %w", dir, err)
	}
	issue := func(name, cert, key string, make func() (pki.Pair, error)) error {
		if p, err := pki.LoadPair(cert, key); err == nil && time.Now().Before(p.Cert.NotAfter) && p.Cert.CheckSignatureFrom(ca.Cert) == nil {
			return nil
		}
		p, err := make()
		if err != nil {
			return err
		}
		_, _, err = p.WritePEM(dir, name)
		return err
	}
	if err := issue("console", r.ServerCert, r.ServerKey, func() (pki.Pair, error) { return ca.Server() }); err != nil {
		return nil, fmt.Errorf("review console certificate: %w", err)
	}
	var people strings.Builder
	people.WriteString("# The dev stack's sample people of the review console; each has a\n# client certificate <name>.pem issued by ca.pem.\npeople:\n")
	for _, p := range samplePeople {
		p.Cert, p.Key = filepath.Join(dir, p.Name+".pem"), filepath.Join(dir, p.Name+"-key.pem")
		if err := issue(p.Name, p.Cert, p.Key, func() (pki.Pair, error) { return ca.Client(p.Name) }); err != nil {
			return nil, fmt.Errorf("certificate of %s: %w", p.Name, err)
		}
		fmt.Fprintf(&people, "  - name: %s\n    role: %s\n    location: %s\n", p.Name, p.Role, p.Location)
		r.Persons = append(r.Persons, p)
	}
	if err := os.WriteFile(r.People, []byte(people.String()), 0o644); err != nil {
		return nil, fmt.Errorf("writing %s: %w", r.People, err)
	}
	return r, nil
}

// Env returns the review service's console variables.
func (r *ReviewPKI) Env() map[string]string {
	return map[string]string{
		"TERROIR_REVIEW_TLS_CERT":    r.ServerCert,
		"TERROIR_REVIEW_TLS_KEY":     r.ServerKey,
		"TERROIR_REVIEW_CLIENT_CA":   r.CA,
		"TERROIR_REVIEW_PEOPLE_FILE": r.People,
	}
}

// CheckConsole visits the console at addr as a workstation would: with
// the first sample person's certificate it must answer 200 naming them,
// and without a certificate it must refuse the connection.
func CheckConsole(ctx context.Context, addr string, r *ReviewPKI) error {
	ca, err := pki.LoadCA(r.CA, r.CAKey)
	if err != nil {
		return err
	}
	p := r.Persons[0]
	cert, err := tls.LoadX509KeyPair(p.Cert, p.Key)
	if err != nil {
		return err
	}
	get := func(certs []tls.Certificate) (int, string, error) {
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: certs, MinVersion: tls.VersionTLS13}}}
		defer client.CloseIdleConnections()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/", nil)
		if err != nil {
			return 0, "", err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	status, body, err := get([]tls.Certificate{cert})
	if err != nil {
		return fmt.Errorf("review console as %s: %w", p.Name, err)
	}
	if status != http.StatusOK || !strings.Contains(body, p.Name) {
		return fmt.Errorf("review console as %s answered %d without naming them", p.Name, status)
	}
	if status, _, err := get(nil); err == nil {
		return fmt.Errorf("review console answered %d to a client without a certificate", status)
	}
	return nil
}
