package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// DemoResource is the resource the dev stack creates for a first run, in
// DemoGeo, with a chat and an embeddings deployment on the built-in
// models.
const (
	DemoResource = "demo"
	DemoGeo      = "eu"
)

// Demo is what the banner shows of the demo resource.
type Demo struct {
	// Key is an API key of the demo resource (its key1 slot).
	Key string
}

// EnsureDemo makes sure the demo resource exists at base with its
// deployments, and returns an API key of it. The key is kept in keyFile
// (readable by its owner only), because the API shows a key only when it
// issues it: a key kept from an earlier run is used while the API still
// takes it; otherwise key1 is issued (or, if it was issued before and
// the file lost, regenerated) and kept. Every step is skipped when
// already done, so it is safe on every start.
func EnsureDemo(ctx context.Context, client *http.Client, base, token, keyFile string) (Demo, error) {
	call := func(method, path, cred string, body any) (int, map[string]any, error) {
		var rd io.Reader
		if body != nil {
			raw, _ := json.Marshal(body)
			rd = bytes.NewReader(raw)
		}
		req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+cred)
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var out map[string]any
		_ = json.Unmarshal(raw, &out)
		return resp.StatusCode, out, nil
	}
	want := func(method, path string, body any, codes ...int) (map[string]any, error) {
		code, out, err := call(method, path, token, body)
		if err != nil {
			return nil, err
		}
		for _, c := range codes {
			if code == c {
				return out, nil
			}
		}
		return nil, fmt.Errorf("%s %s answered %d", method, path, code)
	}
	path := "/mgmt/resources/" + DemoResource
	code, _, err := call("GET", path, token, nil)
	if err != nil {
		return Demo{}, err
	}
	if code == http.StatusNotFound {
		if _, err := want("PUT", path, map[string]any{"location": DemoGeo}, http.StatusCreated, http.StatusOK); err != nil {
			return Demo{}, fmt.Errorf("creating the demo resource: %w", err)
		}
	} else if code != http.StatusOK {
		return Demo{}, fmt.Errorf("GET %s answered %d", path, code)
	}
	// The demo's deployments and their catalog models.
	for _, d := range []struct{ name, model string }{{"chat", "terroir-ngram"}, {"embed", "terroir-embed"}} {
		code, _, err := call("GET", path+"/deployments/"+d.name, token, nil)
		if err != nil {
			return Demo{}, err
		}
		if code == http.StatusOK {
			continue
		}
		body := map[string]any{"sku": map[string]any{"name": "Standard", "capacity": 10},
			"properties": map[string]any{"model": map[string]any{"name": d.model}}}
		if _, err := want("PUT", path+"/deployments/"+d.name, body, http.StatusCreated, http.StatusOK); err != nil {
			return Demo{}, fmt.Errorf("deploying %s for the demo: %w", d.model, err)
		}
	}
	if raw, err := os.ReadFile(keyFile); err == nil {
		if key := strings.TrimSpace(string(raw)); key != "" {
			if code, _, err := call("GET", path, key, nil); err == nil && code == http.StatusOK {
				return Demo{Key: key}, nil
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return Demo{}, fmt.Errorf("reading the demo key: %w", err)
	}
	keys, err := want("POST", path+"/listKeys", nil, http.StatusOK)
	if err != nil {
		return Demo{}, err
	}
	key, _ := keys["key1"].(string)
	if key == "" {
		// key1 was issued before and its value lost: replace it.
		if keys, err = want("POST", path+"/regenerateKey", map[string]any{"keyName": "key1"}, http.StatusOK); err != nil {
			return Demo{}, err
		}
		key, _ = keys["key1"].(string)
	}
	if key == "" {
		return Demo{}, errors.New("the management API issued no key1 for the demo resource")
	}
	if err := os.MkdirAll(filepath.Dir(keyFile), 0o700); err != nil {
		return Demo{}, fmt.Errorf("keeping the demo key: %w", err)
	}
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		return Demo{}, fmt.Errorf("keeping the demo key: %w", err)
	}
	return Demo{Key: key}, nil
}

// DemoCurl is a ready command line for a chat completion of the demo.
func DemoCurl(base, key string) string {
	return "curl -s " + base + "/v1/chat/completions -H 'Authorization: Bearer " + key +
		"' -H 'Content-Type: application/json' -d '{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":\"Tell me about the sea.\"}]}'"
}
