// Package browser drives a real headless Chromium (the Debian chromium
// package) in tests, one browser per person: each has its own profile, its
// own HOME and NSS database holding that person's TLS client certificate,
// and trusts the CA it is given (the review CA) to issue TLS server
// certificates. This is how the review console's tests act as a reviewer
// and a manager at once: the console knows people only by the client
// certificate they present.
//
// Chromium presents the certificate without a prompt because the profile's
// preferences carry an auto-select rule (the same content setting that the
// AutoSelectCertificateForUrls policy sets) matching the person's
// certificate. Nothing bypasses certificate errors: a server whose
// certificate does not chain to the trusted CA fails to load.
//
// Start needs /usr/bin/chromium, certutil and pk12util (libnss3-tools) and
// openssl; `make test` installs them. A test that needs a browser fails,
// naming the missing package, rather than skipping.
package browser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Options describe one person's browser.
type Options struct {
	// Name names the person ("rita-reviewer"); it appears in errors, in
	// screenshot file names and as the certificate's nickname. Required.
	Name string

	// ClientCert and ClientKey are PEM files of the person's client
	// certificate (optionally followed by intermediates) and its private
	// key. Leave both empty for a browser that has no client certificate.
	ClientCert, ClientKey string

	// CACert is a PEM file of the CA certificates the browser trusts to
	// issue TLS server certificates (the review CA); they are trusted for
	// server authentication only. Required.
	CACert string

	// Sites are Chromium content-settings patterns of the sites the client
	// certificate is presented to without a prompt, for example
	// "https://127.0.0.1:8443" or "[*.]example.com". Empty means every site
	// that asks for a certificate this one satisfies.
	Sites []string

	// ExecPath is the Chromium binary. Default: /usr/bin/chromium, else
	// chromium on PATH.
	ExecPath string

	// Timeout bounds each helper call (navigate, wait, click, ...).
	// Default: 10s.
	Timeout time.Duration

	// Width and Height are the window size in pixels. Default: 1280x900.
	Width, Height int
}

// ErrPageLoad is matched (errors.Is) by the error of Navigate when the page
// did not load at all: the connection was refused, the server rejected the
// TLS handshake (no or a wrong client certificate), or the server's
// certificate is not trusted. LoadErrorText gives Chromium's reason.
var ErrPageLoad = chromedp.ErrPageLoad

// LoadErrorText returns Chromium's net error for a page that did not load,
// such as "net::ERR_CERT_AUTHORITY_INVALID", or "" if err is not one.
func LoadErrorText(err error) string {
	var le *chromedp.LoadError
	if errors.As(err, &le) {
		return le.ErrorText
	}
	return ""
}

// startTimeout bounds launching Chromium; a cold start on a loaded machine
// takes a few seconds, a broken install hangs or exits at once.
const startTimeout = 60 * time.Second

// Browser is one running headless Chromium with one tab. Its methods are
// safe to call from one goroutine at a time; different Browsers are
// independent.
type Browser struct {
	*session
	timeout time.Duration // bounds each helper call
}

// session is the running browser that a Browser and its WithTimeout
// variants share.
type session struct {
	t    testing.TB
	name string
	dir  string // profile, HOME and NSS database; removed by Close

	ctx         context.Context // the tab
	cancelTab   context.CancelFunc
	cancelAlloc context.CancelFunc

	closeOnce sync.Once
	closeErr  error
}

// WithTimeout returns the same browser with helper calls bounded by d
// instead of Options.Timeout: short to check that something does not
// happen, long for a slow step.
func (b *Browser) WithTimeout(d time.Duration) *Browser {
	return &Browser{session: b.session, timeout: d}
}

// Name is the person the browser acts as.
func (b *Browser) Name() string { return b.name }

// Start launches a headless Chromium for the person opts describes and
// stops it when t ends (taking a screenshot first if t failed). It fails t
// if the browser cannot start.
func Start(t testing.TB, opts Options) *Browser {
	t.Helper()
	return StartAll(t, opts)[0]
}

// StartAll starts one browser per Options, concurrently (a start is mostly
// Chromium initialising), and returns them in the same order. It fails t if
// any cannot start, stopping the others.
func StartAll(t testing.TB, opts ...Options) []*Browser {
	t.Helper()
	// Created before the browsers so that its cleanup runs after theirs
	// (cleanups run last-in first-out) and a failure screenshot still has
	// somewhere to go.
	_ = t.ArtifactDir()
	browsers := make([]*Browser, len(opts))
	errs := make([]error, len(opts))
	var wg sync.WaitGroup
	for i, o := range opts {
		wg.Go(func() {
			browsers[i], errs[i] = start(t, o)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("browser %s: %w", o.Name, errs[i])
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, b := range browsers {
			if b != nil {
				_ = b.Close()
			}
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, b := range browsers {
			wg.Go(func() {
				if t.Failed() {
					if path, err := b.Screenshot("at-failure"); err == nil {
						t.Logf("browser %s: screenshot at failure: %s", b.name, path)
					}
				}
				if err := b.Close(); err != nil {
					t.Logf("browser %s: %v", b.name, err)
				}
			})
		}
		wg.Wait()
	})
	return browsers
}

func start(t testing.TB, opts Options) (*Browser, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	execPath, err := findExec(opts.ExecPath)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "terroir-browser-"+fileSafe(opts.Name)+"-")
	if err != nil {
		return nil, fmt.Errorf("creating profile directory: %w", err)
	}
	p, err := newProfile(dir, opts)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}

	allocOpts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(execPath),
		chromedp.Flag("headless", "new"),
		chromedp.UserDataDir(p.userData),
		chromedp.WindowSize(opts.Width, opts.Height),
		// Chromium refuses to run as root with its sandbox on.
		chromedp.Flag("no-sandbox", os.Geteuid() == 0),
		// The browser sees only its own HOME (and so its own NSS database)
		// and nothing of the caller's desktop session or secrets.
		chromedp.NoInheritEnv,
		chromedp.Env(p.env()...),
	)
	launch, stopLaunch := context.WithCancel(context.Background())
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(launch, allocOpts...)
	tabCtx, cancelTab := chromedp.NewContext(allocCtx)
	b := &Browser{
		session: &session{
			t:         t,
			name:      opts.Name,
			dir:       dir,
			ctx:       tabCtx,
			cancelTab: cancelTab,
			cancelAlloc: func() {
				cancelAlloc()
				stopLaunch()
			},
		},
		timeout: opts.Timeout,
	}
	watchdog := time.AfterFunc(startTimeout, stopLaunch)
	err = chromedp.Do(tabCtx) // launches the browser and opens the tab
	if !watchdog.Stop() {
		err = fmt.Errorf("not started within %s (%v)", startTimeout, err)
	}
	if err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("starting %s: %w", execPath, err)
	}
	return b, nil
}

func (o Options) validate() error {
	var problems []string
	if o.Name == "" {
		problems = append(problems, "Name is required")
	}
	if o.CACert == "" {
		problems = append(problems, "CACert is required")
	}
	if (o.ClientCert == "") != (o.ClientKey == "") {
		problems = append(problems, "ClientCert and ClientKey go together")
	}
	if o.Timeout < 0 || o.Width < 0 || o.Height < 0 {
		problems = append(problems, "Timeout, Width and Height cannot be negative")
	}
	if len(problems) > 0 {
		return fmt.Errorf("invalid options: %s", strings.Join(problems, "; "))
	}
	return nil
}

func (o *Options) setDefaults() {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Width == 0 {
		o.Width = 1280
	}
	if o.Height == 0 {
		o.Height = 900
	}
}

func findExec(path string) (string, error) {
	if path != "" {
		return path, nil
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium", nil
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p, nil
	}
	return "", errors.New("chromium is not installed (apt-get install chromium; `make test` does this)")
}

// Close stops the browser and removes its profile. It is idempotent; Start
// registers it with t.Cleanup. Closing a WithTimeout variant closes the
// browser.
func (b *Browser) Close() error {
	b.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		// A graceful close lets Chromium flush and end its child processes.
		_ = chromedp.Cancel(ctx)
		cancel()
		b.cancelTab()
		b.cancelAlloc() // waits for the browser process to exit
		b.closeErr = removeProfile(b.dir)
	})
	return b.closeErr
}

// Navigate loads url and waits for the page to load. It fails when the page
// does not load (see ErrPageLoad) or answers with an HTTP status of 400 or
// more.
func (b *Browser) Navigate(url string) error {
	status, err := b.NavigateStatus(url)
	if err != nil {
		return err
	}
	if status >= 400 {
		return b.fail(fmt.Sprintf("loading %s", url), fmt.Errorf("HTTP status %d", status))
	}
	return nil
}

// NavigateStatus loads url, waits for the page to load and returns the HTTP
// status of the document, whatever it is. It fails only when the page does
// not load (see ErrPageLoad).
func (b *Browser) NavigateStatus(url string) (int, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil {
		if errors.Is(err, chromedp.ErrPageLoad) {
			b.settle(ctx)
		}
		return 0, fmt.Errorf("browser %s: loading %s: %w", b.name, url, b.explain(err))
	}
	if resp == nil {
		return 0, fmt.Errorf("browser %s: loading %s: no response", b.name, url)
	}
	return int(resp.Status), nil
}

// settle waits (at most a couple of seconds) until Chromium has committed
// its error page for a failed load. Navigate learns of the failure before
// that page replaces the previous document, and a step taken in between
// (typically a screenshot) would act on a page being torn down.
func (b *Browser) settle(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	const committed = `location.protocol === "chrome-error:" && document.readyState === "complete"`
	for {
		if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](committed)); err == nil && ok {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Fill types value into the field that selector (CSS) matches, replacing
// what it held, as a person would: with key events, so the page's input
// handlers run. A "\n" in value is the Enter key.
func (b *Browser) Fill(selector, value string) error {
	return b.do(fmt.Sprintf("filling %q", selector),
		chromedp.WaitVisible(chromedp.CSS(selector)),
		clearField(selector),
		chromedp.SendKeys(chromedp.CSS(selector), value),
	)
}

// clearField empties the value property of the field that selector (CSS)
// matches: what the field holds, typed into or not. chromedp.Clear resets
// the value attribute or a textarea's text node instead, and fails on an
// empty textarea, which has none; chromedp.SetValue cannot set "" (it
// passes the empty string to the page as undefined).
func clearField(selector string) chromedp.Action[chromedp.Void] {
	sel, _ := json.Marshal(selector) // a string always marshals
	expr := fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (!e || !("value" in e)) return false; e.value = ""; return true; })()`, sel)
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		ok, err := chromedp.Evaluate[bool](expr)(ctx, t)
		if err == nil && !ok {
			err = errors.New("no field with a value matches")
		}
		return chromedp.Void{}, err
	}
}

// Click clicks the element that selector (CSS) matches, once it is visible.
func (b *Browser) Click(selector string) error {
	return b.do(fmt.Sprintf("clicking %q", selector),
		chromedp.Click(chromedp.CSS(selector), chromedp.NodeVisible))
}

// WaitVisible waits until an element that selector (CSS) matches is visible.
func (b *Browser) WaitVisible(selector string) error {
	return b.do(fmt.Sprintf("waiting for %q to be visible", selector),
		chromedp.WaitVisible(chromedp.CSS(selector)))
}

// WaitText waits until the visible text of the element that selector (CSS)
// matches contains text. It keeps waiting across page loads, so it can
// follow a click that submits a form.
func (b *Browser) WaitText(selector, text string) error {
	expr := textExpr(selector)
	deadline := time.Now().Add(b.timeout)
	var last *string
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(b.ctx, time.Until(deadline))
		got, err := chromedp.Run(ctx, chromedp.Evaluate[*string](expr))
		cancel()
		switch {
		case err == nil && got != nil && strings.Contains(*got, text):
			return nil
		case err == nil:
			last, lastErr = got, nil
		case b.ctx.Err() != nil:
			return b.fail(fmt.Sprintf("waiting for %q to contain %q", selector, text), err)
		default:
			lastErr = err // the page is between documents; try again
		}
		if time.Now().After(deadline) {
			why := fmt.Errorf("not within %s; no element matches", b.timeout)
			if last != nil {
				why = fmt.Errorf("not within %s; its text is %q", b.timeout, clip(*last))
			} else if lastErr != nil {
				why = fmt.Errorf("not within %s: %w", b.timeout, lastErr)
			}
			return b.fail(fmt.Sprintf("waiting for %q to contain %q", selector, text), why)
		}
		select {
		case <-b.ctx.Done():
			return b.fail(fmt.Sprintf("waiting for %q to contain %q", selector, text), b.ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Text returns the visible text of the element that selector (CSS)
// matches, waiting for it to exist.
func (b *Browser) Text(selector string) (string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(selector)))
	if err != nil {
		return "", b.fail(fmt.Sprintf("reading the text of %q", selector), err)
	}
	return s, nil
}

// URL returns the address of the page the browser shows.
func (b *Browser) URL() (string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	u, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "", fmt.Errorf("browser %s: reading the location: %w", b.name, err)
	}
	return u, nil
}

// Screenshot saves a PNG of the whole page (not only the window) as
// "<person>-<name>.png" in t.ArtifactDir(), where `go test -artifacts`
// keeps it, and returns its path.
func (b *Browser) Screenshot(name string) (string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	var png []byte
	for {
		var err error
		// Quality 100 makes a PNG. A page being replaced (a navigation
		// between processes) cannot be captured for a moment: try again.
		if png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return "", b.fail(fmt.Sprintf("taking screenshot %q", name), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	path := filepath.Join(b.t.ArtifactDir(), fileSafe(b.name)+"-"+fileSafe(strings.TrimSuffix(name, ".png"))+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return "", fmt.Errorf("browser %s: saving screenshot: %w", b.name, err)
	}
	return path, nil
}

// Run runs chromedp actions on the browser's tab, for what the helpers do
// not cover, bounded by the helper timeout. what says what the actions do,
// for the error.
func (b *Browser) Run(what string, actions ...chromedp.Action[chromedp.Void]) error {
	return b.do(what, actions...)
}

func (b *Browser) do(what string, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		return b.fail(what, err)
	}
	return nil
}

// fail names the browser, the step and the page it was on.
func (b *Browser) fail(what string, err error) error {
	return fmt.Errorf("browser %s: %s on %s: %w", b.name, what, b.page(), b.explain(err))
}

func (b *Browser) explain(err error) error {
	if errors.Is(err, context.DeadlineExceeded) && b.ctx.Err() == nil {
		return fmt.Errorf("not within %s: %w", b.timeout, err)
	}
	return err
}

// page is the current address for error messages; it never fails.
func (b *Browser) page() string {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	u, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil || u == "" {
		return "an unknown page"
	}
	return u
}

// textExpr is a JavaScript expression giving the visible text of the first
// element selector matches, or null.
func textExpr(selector string) string {
	sel, _ := json.Marshal(selector) // a string always marshals
	return fmt.Sprintf(`(() => { const e = document.querySelector(%s); return e ? e.innerText : null; })()`, sel)
}

func clip(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// fileSafe keeps letters, digits, '.', '-' and '_' so that a person's or a
// screenshot's name is one plain file name.
func fileSafe(s string) string {
	out := []rune(s)
	for i, r := range out {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
		default:
			out[i] = '_'
		}
	}
	if len(out) == 0 || string(out) == "." || string(out) == ".." {
		return "_"
	}
	return string(out)
}
