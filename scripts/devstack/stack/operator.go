package stack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// EnsureOperatorToken returns the dev stack's operator token, stored in
// path (created with a fresh random token, readable by its owner only,
// when missing), so the token stays the same across restarts.
func EnsureOperatorToken(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		if tok := strings.TrimSpace(string(raw)); len(tok) >= 16 {
			return tok, nil
		}
		return "", fmt.Errorf("operator token file %s holds no token of at least 16 characters; delete it to get a new one", path)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading operator token: %w", err)
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := "terroir-op-" + hex.EncodeToString(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("creating operator token directory: %w", err)
	}
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing operator token: %w", err)
	}
	return tok, nil
}

// CheckManagement drives the API at base as an operator and as an app
// would: it creates a resource, issues its keys, reads the resource with
// an app key, deploys the built-in model, asks it a question through the
// filtered path, and deletes the resource again.
func CheckManagement(ctx context.Context, client *http.Client, base, token, name string) error {
	call := func(method, path, cred string, body any, want int) (map[string]any, error) {
		var rd io.Reader
		if body != nil {
			raw, _ := json.Marshal(body)
			rd = bytes.NewReader(raw)
		}
		req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+cred)
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			return nil, fmt.Errorf("%s %s answered %d, want %d: %s", method, path, resp.StatusCode, want, bytes.TrimSpace(raw))
		}
		var out map[string]any
		_ = json.Unmarshal(raw, &out)
		return out, nil
	}
	path := "/mgmt/resources/" + name
	if _, err := call("PUT", path, token, map[string]any{"location": "eu"}, http.StatusCreated); err != nil {
		return err
	}
	keys, err := call("POST", path+"/listKeys", token, nil, http.StatusOK)
	if err != nil {
		return err
	}
	key, _ := keys["key1"].(string)
	if key == "" {
		return fmt.Errorf("listKeys of a new resource returned no key1")
	}
	res, err := call("GET", path, key, nil, http.StatusOK)
	if err != nil {
		return fmt.Errorf("reading the resource with its own key: %w", err)
	}
	if res["name"] != name {
		return fmt.Errorf("the resource read with its own key is named %v", res["name"])
	}
	if _, err := call("GET", "/mgmt/resources", key, nil, http.StatusForbidden); err != nil {
		return fmt.Errorf("an app key reached an operator endpoint: %w", err)
	}
	deployment := map[string]any{"sku": map[string]any{"name": "Standard", "capacity": 10},
		"properties": map[string]any{"model": map[string]any{"name": "terroir-ngram"}}}
	if _, err := call("PUT", path+"/deployments/chat", token, deployment, http.StatusCreated); err != nil {
		return err
	}
	answer, err := call("POST", "/v1/chat/completions", key, map[string]any{"model": "chat", "max_tokens": 16,
		"messages": []map[string]string{{"role": "user", "content": "Tell me about the sea."}}}, http.StatusOK)
	if err != nil {
		return fmt.Errorf("a chat completion through the filtered path: %w", err)
	}
	if choices, _ := answer["choices"].([]any); len(choices) != 1 || answer["prompt_filter_results"] == nil {
		return fmt.Errorf("the chat completion lacks its choice or its prompt_filter_results")
	}
	_, err = call("DELETE", path, token, nil, http.StatusNoContent)
	return err
}
