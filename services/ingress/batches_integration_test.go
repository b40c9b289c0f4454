package main

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestBatchesRoundTrip drives the Batch API through ingress as an app
// does: upload a batch file, create a batch from it (OpenAI's paths,
// Azure's dated paths and Azure's deployment path), find it from
// another instance, list and cancel it. No batch service runs here, so a
// batch stays validating until cancelled.
func TestBatchesRoundTrip(t *testing.T) {
	t.Parallel()
	a, s, _, key := appSetup(t, map[string]string{"TERROIR_BATCH_MAX_ENQUEUED_TOKENS": "1000"})
	const content = `{"custom_id":"1","method":"POST","url":"/v1/chat/completions","body":{"model":"chat","messages":[{"role":"user","content":"hi"}]}}` + "\n"
	file := a.upload("/v1/files", key, "batch", "requests.jsonl", content, http.StatusOK).body["id"].(string)
	canary := "canaryotter" + strings.ReplaceAll(time.Now().Format(time.RFC3339Nano), ":", "")

	r := a.do("POST", "/v1/batches", key, map[string]any{"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h",
		"metadata": map[string]string{"note": canary}})
	id, _ := r.body["id"].(string)
	if r.status != http.StatusOK || !strings.HasPrefix(id, "batch_") || r.body["status"] != "validating" || r.body["input_file_id"] != file ||
		r.body["expires_at"] != r.body["created_at"].(float64)+86400 {
		t.Fatalf("create = %d %s", r.status, r.raw)
	}
	other := startAnother(t, s)
	for _, path := range []string{"/v1/batches/" + id, "/openai/batches/" + id + "?api-version=2024-10-21", "/openai/v1/batches/" + id} {
		if got := other.do("GET", path, key, nil); got.status != http.StatusOK || got.body["status"] != "validating" || got.body["id"] != id {
			t.Errorf("GET %s from another instance = %d %s", path, got.status, got.raw)
		}
	}

	// Azure: 201 from 2025-04-01-preview, also under a deployment's path
	// (the Node SDK's AzureOpenAI client with a deployment option).
	az := a.do("POST", "/openai/deployments/chat/batches?api-version=2025-04-01-preview", key,
		map[string]any{"input_file_id": file, "endpoint": "/chat/completions", "completion_window": "24h"})
	if az.status != http.StatusCreated || az.body["endpoint"] != "/chat/completions" {
		t.Fatalf("azure create = %d %s", az.status, az.raw)
	}
	if r := a.do("POST", "/openai/batches", key, map[string]any{"input_file_id": file, "endpoint": "/chat/completions", "completion_window": "24h"}); r.status != http.StatusBadRequest || r.errParam() != "api-version" {
		t.Errorf("azure create without api-version = %d %s", r.status, r.raw)
	}
	l := a.do("GET", "/openai/batches?api-version=2024-10-21&limit=1", key, nil)
	if l.status != http.StatusOK || len(l.body["data"].([]any)) != 1 || l.body["first_id"] != az.body["id"] || l.body["has_more"] != true ||
		l.header.Get("deployment-enqueued-tokens") != "64" || l.header.Get("deployment-maximum-enqueued-tokens") != "1000" {
		t.Errorf("azure list = %d %v %s", l.status, l.header, l.raw)
	}

	c := other.do("POST", "/v1/batches/"+id+"/cancel", key, nil)
	if c.status != http.StatusOK || c.body["status"] != "cancelling" || c.body["cancelling_at"] == nil {
		t.Errorf("cancel = %d %s", c.status, c.raw)
	}

	for _, rec := range allRecords(t, s) {
		var hs bytes.Buffer
		for _, h := range rec.Headers {
			hs.WriteString(h.Key + "=" + string(h.Value) + "\n")
		}
		if bytes.Contains(rec.Value, []byte(canary)) || strings.Contains(hs.String(), canary) {
			t.Errorf("batch metadata in the clear on %s", rec.Topic)
		}
	}
}

// TestDeletingAResourceDeletesItsBatches: a resource created anew under
// a deleted one's name starts with no batches.
func TestDeletingAResourceDeletesItsBatches(t *testing.T) {
	t.Parallel()
	a, _, _, key := appSetup(t, nil)
	file := a.upload("/v1/files", key, "batch", "requests.jsonl", "{}\n", http.StatusOK).body["id"].(string)
	id := a.do("POST", "/v1/batches", key, map[string]any{"input_file_id": file, "endpoint": "/v1/embeddings", "completion_window": "24h"}).body["id"].(string)
	a.op("DELETE", "/mgmt/resources/acme", nil, http.StatusNoContent)
	a.op("PUT", "/mgmt/resources/acme", resourceBody("eu"), http.StatusCreated)
	key = a.op("POST", "/mgmt/resources/acme/listKeys", nil, http.StatusOK).body["key1"].(string)
	if r := a.do("GET", "/v1/batches", key, nil); r.status != http.StatusOK || len(r.body["data"].([]any)) != 0 {
		t.Errorf("the new acme lists %d %s", r.status, r.raw)
	}
	if r := a.do("GET", "/v1/batches/"+id, key, nil); r.status != http.StatusNotFound {
		t.Errorf("the new acme reads the old acme's batch: %d %s", r.status, r.raw)
	}
}
