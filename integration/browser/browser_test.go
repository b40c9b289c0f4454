package browser_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"html/template"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/integration/browser"
	"github.com/terroir-ai/terroir/services/review/pki"
)

// whoami is a stand-in for the review console: HTTPS on loopback, requiring
// a client certificate from the review CA, answering with the CommonName it
// verified.
type whoami struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string // CommonNames of the requests served
}

var (
	whoPage = template.Must(template.New("who").Parse(`<!doctype html>
<title>whoami</title>
<h1 id="who">{{.}}</h1>
<form action="/note" method="post">
  <label>Note <input id="note" name="note" value="draft"></label>
  <button id="send">Send</button>
</form>`))
	notePage = template.Must(template.New("note").Parse(`<!doctype html>
<title>noted</title>
<p id="said">{{.Who}} wrote: {{.Note}}</p>`))
)

func startWhoami(t *testing.T, serverCA, clientCA *pki.CA) *whoami {
	t.Helper()
	pair, err := serverCA.Server("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pair.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	w := &whoami{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(rw http.ResponseWriter, r *http.Request) {
		_ = whoPage.Execute(rw, w.person(r))
	})
	mux.HandleFunc("POST /note", func(rw http.ResponseWriter, r *http.Request) {
		_ = notePage.Execute(rw, struct{ Who, Note string }{w.person(r), r.FormValue("note")})
	})
	w.Server = httptest.NewUnstartedServer(mux)
	w.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCA.Pool(),
		MinVersion:   tls.VersionTLS12,
	}
	// Refused handshakes are the point of some checks, not noise.
	w.Config.ErrorLog = log.New(io.Discard, "", 0)
	w.StartTLS()
	t.Cleanup(w.Close)
	return w
}

func (w *whoami) person(r *http.Request) string {
	cn := r.TLS.PeerCertificates[0].Subject.CommonName
	w.mu.Lock()
	defer w.mu.Unlock()
	if !slices.Contains(w.seen, cn) {
		w.seen = append(w.seen, cn)
	}
	return cn
}

func (w *whoami) people() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Sorted(slices.Values(w.seen))
}

func newCA(t *testing.T, name string) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestEachPersonPresentsTheirOwnCertificate(t *testing.T) {
	dir := t.TempDir()
	reviewCA := newCA(t, "Terroir Review Test CA")
	otherCA := newCA(t, "Unrelated Test CA")
	reviewCAFile, _, err := reviewCA.WritePEM(filepath.Join(dir, "review-ca"))
	if err != nil {
		t.Fatal(err)
	}
	console := startWhoami(t, reviewCA, reviewCA)
	impostor := startWhoami(t, otherCA, reviewCA) // a server the browsers must not trust

	person := func(name string, issuer *pki.CA) browser.Options {
		t.Helper()
		opts := browser.Options{Name: name, CACert: reviewCAFile}
		if issuer != nil {
			pair, err := issuer.Client(name)
			if err != nil {
				t.Fatal(err)
			}
			if opts.ClientCert, opts.ClientKey, err = pair.WritePEM(filepath.Join(dir, "people"), name); err != nil {
				t.Fatal(err)
			}
		}
		return opts
	}
	// Two people of the review CA, someone with a certificate from another
	// CA and someone with none. Rita's certificate is presented to the
	// console only, the others' to any site that asks.
	ritaOpts := person("rita-reviewer", reviewCA)
	ritaOpts.Sites = []string{console.URL}
	all := browser.StartAll(t,
		ritaOpts,
		person("max-manager", reviewCA),
		person("mallory-other-ca", otherCA),
		person("nobody-no-cert", nil))
	reviewer, manager, strangers := all[0], all[1], all[2:]

	// Both people are signed in at once, each as themselves.
	for _, p := range []struct {
		b    *browser.Browser
		name string
	}{{reviewer, "rita-reviewer"}, {manager, "max-manager"}} {
		if err := p.b.Navigate(console.URL); err != nil {
			t.Fatal(err)
		}
		got, err := p.b.Text("#who")
		if err != nil {
			t.Fatal(err)
		}
		if got != p.name {
			t.Errorf("%s's browser was seen as %q", p.name, got)
		}
		shot, err := p.b.Screenshot("signed-in")
		if err != nil {
			t.Fatal(err)
		}
		if png, err := os.ReadFile(shot); err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
			t.Errorf("screenshot %s is not a PNG (read error %v)", shot, err)
		}
	}

	// A form round trip: the helpers follow a submit to the next page.
	if err := reviewer.Fill("#note", "case looks benign"); err != nil {
		t.Fatal(err)
	}
	if err := reviewer.Click("#send"); err != nil {
		t.Fatal(err)
	}
	if err := reviewer.WaitText("#said", "rita-reviewer wrote: case looks benign"); err != nil {
		t.Fatal(err)
	}
	if _, err := reviewer.Screenshot("noted"); err != nil {
		t.Fatal(err)
	}
	if err := manager.WaitVisible("#who"); err != nil { // untouched by the reviewer's submit
		t.Fatal(err)
	}

	// A server certificate from a CA the browser does not trust is an
	// error: nothing bypasses certificate checks.
	err = reviewer.Navigate(impostor.URL)
	if !errors.Is(err, browser.ErrPageLoad) || !strings.Contains(browser.LoadErrorText(err), "CERT_AUTHORITY_INVALID") {
		t.Errorf("loading a server with an untrusted certificate: got %v, want net::ERR_CERT_AUTHORITY_INVALID", err)
	}

	// Without a certificate from the review CA, the console refuses the
	// connection.
	for _, b := range strangers {
		name := b.Name()
		err := b.Navigate(console.URL)
		if !errors.Is(err, browser.ErrPageLoad) {
			t.Errorf("%s loaded the console: got %v, want a refused connection", name, err)
		} else {
			t.Logf("%s refused: %v", name, err)
		}
		if _, err := b.Screenshot("refused"); err != nil {
			t.Error(err)
		}
		// Errors name the person, the step and the page.
		err = b.WithTimeout(300 * time.Millisecond).WaitVisible("#who")
		if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), `"#who"`) {
			t.Errorf("waiting on the refused page: got %v, want an error naming %s and \"#who\"", err, name)
		}
	}

	if got, want := console.people(), []string{"max-manager", "rita-reviewer"}; !slices.Equal(got, want) {
		t.Errorf("the console served %v, want %v", got, want)
	}
}
