package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/azure"
	"github.com/openai/openai-go/v3/option"
)

// TestGoSDKBatch drives the Batch API with the official Go SDK
// (github.com/openai/openai-go/v3), configured for Azure and for OpenAI:
// upload a JSONL file, create a batch, poll it to completed and read one
// output line per custom_id, the jailbreak line as a content_filter
// error line; another resource's client gets 404 for the batch and its
// files.
func TestGoSDKBatch(t *testing.T) {
	s := startStackWith(t, batchStack, nil)
	key := s.tenant("acme", "eu", true)
	other := s.tenant("other", "eu", true)
	common := []option.RequestOption{option.WithMaxRetries(0), option.WithRequestTimeout(60 * time.Second)}
	modes := []struct {
		name   string
		client func(key string) openai.Client
		url    string
	}{
		{"azure", func(key string) openai.Client {
			return openai.NewClient(append([]option.RequestOption{azure.WithEndpoint(s.base, sdkAPIVersion), azure.WithAPIKey(key), azure.WithUnsafeAllowHTTP()}, common...)...)
		}, "/chat/completions"},
		{"openai", func(key string) openai.Client {
			return openai.NewClient(append([]option.RequestOption{option.WithBaseURL(s.base + "/v1/"), option.WithAPIKey(key)}, common...)...)
		}, "/v1/chat/completions"},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := m.client(key)
			ctx := t.Context()
			var in bytes.Buffer
			const n = 12
			for i := range n {
				fmt.Fprintf(&in, `{"custom_id":"go-%d","method":"POST","url":%q,"body":{"model":"chat","max_tokens":12,"messages":[{"role":"user","content":"Tell me about the harbour, part %d."}]}}`+"\n", i, m.url, i)
			}
			fmt.Fprintf(&in, `{"custom_id":"jailbreak","method":"POST","url":%q,"body":{"model":"chat","messages":[{"role":"user","content":%q}]}}`+"\n", m.url, sdkJailbreak)
			f, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(in.Bytes()), "go.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
			if err != nil {
				t.Fatalf("upload: %v", err)
			}
			b, err := c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpoint(m.url),
				CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if b.Status != openai.BatchStatusValidating || b.InputFileID != f.ID || !strings.HasPrefix(b.ID, "batch_") {
				t.Fatalf("created batch: %s", b.RawJSON())
			}
			deadline := time.Now().Add(2 * time.Minute)
			for b.Status != openai.BatchStatusCompleted && b.Status != openai.BatchStatusFailed && b.Status != openai.BatchStatusCancelled && b.Status != openai.BatchStatusExpired {
				if time.Now().After(deadline) {
					t.Fatalf("batch still %s: %s", b.Status, b.RawJSON())
				}
				time.Sleep(200 * time.Millisecond) // polling with a deadline
				if b, err = c.Batches.Get(ctx, b.ID); err != nil {
					t.Fatalf("retrieve: %v", err)
				}
			}
			if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Total != n+1 || b.RequestCounts.Completed != n || b.RequestCounts.Failed != 1 {
				t.Fatalf("batch ended: %s", b.RawJSON())
			}
			lines := func(id string) map[string]json.RawMessage {
				resp, err := c.Files.Content(ctx, id)
				if err != nil {
					t.Fatalf("content of %s: %v", id, err)
				}
				defer resp.Body.Close()
				out := map[string]json.RawMessage{}
				sc := bufio.NewScanner(resp.Body)
				sc.Buffer(nil, 1<<20)
				for sc.Scan() {
					var l struct {
						CustomID string          `json:"custom_id"`
						Response json.RawMessage `json:"response"`
					}
					if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
						t.Fatalf("line %s: %v", sc.Text(), err)
					}
					if _, dup := out[l.CustomID]; dup {
						t.Errorf("%s twice in %s", l.CustomID, id)
					}
					out[l.CustomID] = l.Response
				}
				return out
			}
			out := lines(b.OutputFileID)
			for i := range n {
				r, ok := out[fmt.Sprintf("go-%d", i)]
				if !ok || !bytes.Contains(r, []byte(`"status_code":200`)) || !bytes.Contains(r, []byte(`"chat.completion"`)) {
					t.Errorf("go-%d: %s", i, r)
				}
			}
			errs := lines(b.ErrorFileID)
			if r := errs["jailbreak"]; len(errs) != 1 || !bytes.Contains(r, []byte(`"status_code":400`)) || !bytes.Contains(r, []byte(`"content_filter"`)) {
				t.Errorf("error file: %v", errs)
			}
			// Another resource finds nothing of it.
			o := m.client(other)
			var apiErr *openai.Error
			if _, err := o.Batches.Get(ctx, b.ID); !asStatus(err, &apiErr, http.StatusNotFound) {
				t.Errorf("another resource's retrieve: %v", err)
			}
			if _, err := o.Files.Get(ctx, b.OutputFileID); !asStatus(err, &apiErr, http.StatusNotFound) {
				t.Errorf("another resource's file retrieve: %v", err)
			}
		})
	}
}

// asStatus reports whether err is an API error with the given status.
func asStatus(err error, target **openai.Error, status int) bool {
	if err == nil {
		return false
	}
	e, ok := err.(*openai.Error)
	if !ok {
		return false
	}
	*target = e
	return e.StatusCode == status
}
