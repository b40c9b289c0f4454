package main

import (
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/daemon/daemontest"
	"github.com/terroir-ai/terroir/pkg/tlsfiles/tlstest"
)

// TestRESTAPIServesHTTPS: given a certificate, the REST API speaks only
// HTTPS, refuses TLS older than 1.2, and serves a renewed certificate as
// soon as its files are replaced, without a restart.
func TestRESTAPIServesHTTPS(t *testing.T) {
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	first := ca.Server(t, dir, "ingress")
	s := daemontest.Start(t, run, map[string]string{
		"TERROIR_HTTP_TLS_CERT_FILE": first.CertFile,
		"TERROIR_HTTP_TLS_KEY_FILE":  first.KeyFile,
	})
	addr := s.Env["TERROIR_HTTP_ADDR"]
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, DisableKeepAlives: true}}

	resp, err := client.Get("https://" + addr + "/v1/models")
	if err != nil {
		t.Fatalf("HTTPS request: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("x-request-id") == "" {
		t.Errorf("GET /v1/models without a key over HTTPS = %d, want 401 with a request ID", resp.StatusCode)
	}
	if resp.TLS == nil || resp.TLS.PeerCertificates[0].SerialNumber.Cmp(first.Cert.SerialNumber) != 0 {
		t.Errorf("served certificate is not the configured one")
	}

	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/v1/models"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP = %d, want the TLS server's 400", resp.StatusCode)
		}
	}

	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), MinVersion: v, MaxVersion: v})
		if err == nil {
			conn.Close()
			t.Errorf("a %s handshake succeeded", tls.VersionName(v))
		}
	}

	renewed := ca.Server(t, dir, "ingress")
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool()})
		if err != nil {
			t.Fatalf("handshake after renewal: %v", err)
		}
		got := conn.ConnectionState().PeerCertificates[0].SerialNumber
		conn.Close()
		if got.Cmp(renewed.Cert.SerialNumber) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate is not served 10 s after its files were replaced")
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

func TestHTTPTLSNeedsBothFiles(t *testing.T) {
	env := daemontest.Env(t, map[string]string{"TERROIR_HTTP_TLS_CERT_FILE": "/nonexistent/cert.pem"})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err := run(ctx, func(k string) string { return env[k] })
	if err == nil {
		t.Fatal("run accepted a certificate without its key")
	}
	for _, want := range []string{"TERROIR_HTTP_TLS_KEY_FILE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}
