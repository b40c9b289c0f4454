package browser

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// profile is what Chromium reads from disk for one person: a HOME whose
// NSS database ($HOME/.pki/nssdb, where Chromium on Linux keeps client
// certificates and trust settings) holds the person's certificate and the
// trusted CA, and a user data directory whose preferences auto-select that
// certificate.
type profile struct {
	home     string
	userData string
}

func newProfile(dir string, opts Options) (*profile, error) {
	p := &profile{
		home:     filepath.Join(dir, "home"),
		userData: filepath.Join(dir, "user-data"),
	}
	tools, err := findTools()
	if err != nil {
		return nil, err
	}
	db := filepath.Join(p.home, ".pki", "nssdb")
	if err := os.MkdirAll(db, 0o700); err != nil {
		return nil, fmt.Errorf("creating NSS database directory: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(p.userData, "Default"), 0o700); err != nil {
		return nil, fmt.Errorf("creating user data directory: %w", err)
	}
	nss := "sql:" + db
	if err := tools.run("certutil", "-N", "--empty-password", "-d", nss); err != nil {
		return nil, fmt.Errorf("creating NSS database: %w", err)
	}
	if err := trustCAs(tools, nss, dir, opts.CACert); err != nil {
		return nil, err
	}
	var filter map[string]any
	if opts.ClientCert != "" {
		if filter, err = importClient(tools, nss, dir, opts); err != nil {
			return nil, err
		}
	}
	if err := writePreferences(p.userData, filter, opts.Sites); err != nil {
		return nil, err
	}
	return p, nil
}

// env is the browser's whole environment: its own HOME and XDG directories
// (so nothing is read from or written to the caller's), and PATH for the
// Debian launcher script.
func (p *profile) env() []string {
	env := []string{
		"HOME=" + p.home,
		"XDG_CONFIG_HOME=" + filepath.Join(p.home, ".config"),
		"XDG_CACHE_HOME=" + filepath.Join(p.home, ".cache"),
		"XDG_DATA_HOME=" + filepath.Join(p.home, ".local", "share"),
		"LANG=C.UTF-8",
	}
	for _, name := range []string{"PATH", "TMPDIR", "TZ"} {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	return env
}

// toolPaths are the NSS and OpenSSL command-line programs, by name.
type toolPaths map[string]string

func findTools() (toolPaths, error) {
	t := toolPaths{}
	var missing []string
	for name, pkg := range map[string]string{"certutil": "libnss3-tools", "pk12util": "libnss3-tools", "openssl": "openssl"} {
		p, err := exec.LookPath(name)
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (apt-get install %s)", name, pkg))
			continue
		}
		t[name] = p
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, fmt.Errorf("not installed: %s; `make test` installs them", strings.Join(missing, ", "))
	}
	return t, nil
}

func (t toolPaths) run(name string, args ...string) error {
	// Without a terminal on stdin, certutil and pk12util fail rather than
	// wait for a password.
	out, err := exec.Command(t[name], args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, args[0], err, bytes.TrimSpace(out))
	}
	return nil
}

// trustCAs imports every certificate of the PEM file caFile as a CA trusted
// to issue TLS server certificates ("C,,": SSL only, not e-mail or code).
func trustCAs(t toolPaths, nss, dir, caFile string) error {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("reading CA certificate: %w", err)
	}
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		n++
		one := filepath.Join(dir, "ca-"+strconv.Itoa(n)+".pem")
		if err := os.WriteFile(one, pem.EncodeToMemory(block), 0o600); err != nil {
			return fmt.Errorf("writing CA certificate: %w", err)
		}
		err := t.run("certutil", "-A", "-n", "trusted-ca-"+strconv.Itoa(n), "-t", "C,,", "-i", one, "-d", nss)
		_ = os.Remove(one)
		if err != nil {
			return fmt.Errorf("trusting CA certificate %d of %s: %w", n, caFile, err)
		}
	}
	if n == 0 {
		return fmt.Errorf("no PEM certificate in %s", caFile)
	}
	return nil
}

// importClient imports the person's certificate and key into the NSS
// database (as PKCS#12, the form pk12util takes) and returns the
// auto-select filter that matches exactly that certificate.
func importClient(t toolPaths, nss, dir string, opts Options) (map[string]any, error) {
	pair, err := tls.LoadX509KeyPair(opts.ClientCert, opts.ClientKey)
	if err != nil {
		return nil, fmt.Errorf("loading client certificate: %w", err)
	}
	leaf := pair.Leaf
	pass := filepath.Join(dir, "p12.pass")
	p12 := filepath.Join(dir, "client.p12")
	defer os.Remove(pass)
	defer os.Remove(p12)
	// The password goes through a file, not the command line, which other
	// users of the machine can read.
	if err := os.WriteFile(pass, []byte(rand.Text()), 0o600); err != nil {
		return nil, fmt.Errorf("writing PKCS#12 password: %w", err)
	}
	if err := t.run("openssl", "pkcs12", "-export", "-in", opts.ClientCert, "-inkey", opts.ClientKey,
		"-name", opts.Name, "-out", p12, "-passout", "file:"+pass); err != nil {
		return nil, fmt.Errorf("packing client certificate: %w", err)
	}
	if err := t.run("pk12util", "-i", p12, "-d", nss, "-w", pass); err != nil {
		return nil, fmt.Errorf("importing client certificate: %w", err)
	}
	filter := map[string]any{}
	if cn := leaf.Subject.CommonName; cn != "" {
		filter["SUBJECT"] = map[string]string{"CN": cn}
	}
	if cn := leaf.Issuer.CommonName; cn != "" {
		filter["ISSUER"] = map[string]string{"CN": cn}
	}
	return filter, nil
}

// writePreferences writes the profile's Preferences with the
// auto_select_certificate content setting: for each site pattern, present
// the certificate filter matches without asking. Chromium consults it
// before it would show its certificate chooser, which a headless browser
// cannot answer. With no filter (no client certificate) there is no rule;
// Chromium then continues without a certificate, as it does when the
// server's acceptable CAs match none of the person's certificates.
func writePreferences(userData string, filter map[string]any, sites []string) error {
	exceptions := map[string]any{}
	if filter != nil {
		if len(sites) == 0 {
			sites = []string{"*"}
		}
		for _, site := range sites {
			// The key is "<primary pattern>,<secondary pattern>".
			exceptions[site+",*"] = map[string]any{
				"setting": map[string]any{"filters": []any{filter}},
			}
		}
	}
	prefs := map[string]any{
		"profile": map[string]any{
			"content_settings": map[string]any{
				"exceptions": map[string]any{"auto_select_certificate": exceptions},
			},
		},
	}
	data, err := json.Marshal(prefs)
	if err != nil {
		return fmt.Errorf("encoding preferences: %w", err)
	}
	if err := os.WriteFile(filepath.Join(userData, "Default", "Preferences"), data, 0o600); err != nil {
		return fmt.Errorf("writing preferences: %w", err)
	}
	return nil
}

// removeProfile removes dir after the browser exited. Chromium's helper
// processes (zygote, crash handler) can outlive the main process by a few
// milliseconds and write into the profile meanwhile, so it ends any that
// still run with this profile (they are this browser's: the directory is
// unique to it) and retries the removal briefly.
func removeProfile(dir string) error {
	want := []byte("--user-data-dir=" + filepath.Join(dir, "user-data"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		killProfileProcesses(want)
		err := os.RemoveAll(dir)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("removing profile: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func killProfileProcesses(arg []byte) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for a := range bytes.SplitSeq(cmdline, []byte{0}) {
			if bytes.Equal(a, arg) {
				_ = syscall.Kill(pid, syscall.SIGKILL) // it may have exited meanwhile
				break
			}
		}
	}
}
