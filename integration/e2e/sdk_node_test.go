package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNodeSDKAzure runs the official openai npm package, pinned by
// node/package-lock.json, in AzureOpenAI mode against a running stack:
// chat, streaming chat, embeddings (base64, the SDK's default, and float),
// a blocked prompt, a filtered output and the Files API (upload, list,
// retrieve, content, delete). The assertions live in
// node/sdk.mjs; this test installs the package, runs the script and fails
// with its output.
//
// Node.js and npm are required, not optional: without them the test fails.
func TestNodeSDKAzure(t *testing.T) {
	node, npm := lookTool(t, "node"), lookTool(t, "npm")

	// The package is installed into a scratch copy of node/ so that a
	// checkout stays clean and every run starts from the lock file alone;
	// npm's own cache makes repeated installs fast and offline-capable.
	dir := t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json", "sdk.mjs"} {
		raw, err := os.ReadFile(filepath.Join("node", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	started := time.Now()
	if out, err := runTool(t, 5*time.Minute, dir, nil, npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
	t.Logf("npm ci: %s", time.Since(started).Round(time.Millisecond))

	s, key := sdkStack(t)
	started = time.Now()
	out, err := runTool(t, 2*time.Minute, dir, []string{
		"TERROIR_ENDPOINT=" + s.base,
		"TERROIR_API_KEY=" + key,
		"TERROIR_API_VERSION=" + sdkAPIVersion,
	}, node, "sdk.mjs")
	if err != nil {
		t.Fatalf("node sdk.mjs: %v\n%s\nservice logs:\n%s", err, out, s.logs.String())
	}
	t.Logf("node sdk.mjs (%s):\n%s", time.Since(started).Round(time.Millisecond), out)
}

// lookTool finds a required command on PATH or fails the test naming it.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required by the SDK tests but was not found on PATH (Debian: apt-get install nodejs npm): %v", name, err)
	}
	return p
}

// runTool runs a command in dir with extra environment variables and
// returns its combined output.
func runTool(t *testing.T, timeout time.Duration, dir string, env []string, name string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	// The SDK reads OPENAI_* and AZURE_OPENAI_* variables as defaults (a
	// base URL there would conflict with the endpoint); only env configures it.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OPENAI_") && !strings.HasPrefix(kv, "AZURE_OPENAI_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Env = append(cmd.Env, "NO_COLOR=1", "npm_config_update_notifier=false")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}
