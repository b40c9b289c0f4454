package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"testing"

	"github.com/terroir-ai/terroir/services/review/pki"
)

func TestIssueVerifyAndHandshake(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewCA("Terroir review CA")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Server()
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Client("ana.reviewer")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client certificate does not verify: %v", err)
	}
	if client.Cert.Subject.CommonName != "ana.reviewer" {
		t.Fatalf("client CN = %q", client.Cert.Subject.CommonName)
	}
	if _, err := server.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "localhost"}); err != nil {
		t.Fatalf("server certificate does not verify for localhost: %v", err)
	}
	if err := server.Cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	// A client certificate is no server certificate.
	if _, err := client.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("client certificate verifies for server auth")
	}
	other, err := pki.NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Cert.Verify(x509.VerifyOptions{Roots: other.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("client certificate verifies under another CA")
	}

	sc, err := server.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := client.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{sc},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(), MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			got <- err.Error()
			return
		}
		got <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
		_, _ = io.Copy(io.Discard, c)
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cc}})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if cn := <-got; cn != "ana.reviewer" {
		t.Fatalf("server saw %q", cn)
	}
}

func TestWriteAndLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := pki.NewCA("dev review CA")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := ca.WritePEM(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v", fi.Mode(), err)
	}
	loaded, err := pki.LoadCA(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	client, err := loaded.Client("jonas.manager")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("certificate of the reloaded CA does not verify under the original: %v", err)
	}
	cf, kf, err := client.WritePEM(dir, "jonas.manager")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(cf, kf); err != nil {
		t.Fatalf("written client pair unusable by crypto/tls: %v", err)
	}
	if _, err := pki.LoadCA(cf, kf); err == nil {
		t.Fatal("a client certificate loaded as a CA")
	}
	if _, _, err := client.WritePEM(dir, "../escape"); err == nil {
		t.Fatal("wrote outside dir")
	}
}
