package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/bus/bustest"
)

// TestNodeSDKBatch runs node/batch.mjs, the official openai npm package
// in AzureOpenAI and OpenAI modes, against a stack with the batch
// service: a batch completes with one output line per custom_id and its
// jailbreak line as a content_filter error line; a file with malformed
// lines fails naming each; a cancelled batch ends cancelled with partial
// output; the AzureOpenAI client with a deployment reaches the batches
// under /openai/deployments/{deployment}/; another resource gets 404 for
// every file and batch ID.
func TestNodeSDKBatch(t *testing.T) {
	node, npm := lookTool(t, "node"), lookTool(t, "npm")
	dir := t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json", "batch.mjs"} {
		raw, err := os.ReadFile(filepath.Join("node", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := runTool(t, 5*time.Minute, dir, nil, npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
	s := startStackWith(t, batchStack, nil)
	key := s.tenant("acme", "eu", true)
	other := s.tenant("other", "eu", true)
	started := time.Now()
	out, err := runTool(t, 8*time.Minute, dir, []string{
		"TERROIR_ENDPOINT=" + s.base,
		"TERROIR_API_KEY=" + key,
		"TERROIR_OTHER_API_KEY=" + other,
		"TERROIR_API_VERSION=" + sdkAPIVersion,
	}, node, "batch.mjs")
	if err != nil {
		t.Fatalf("node batch.mjs: %v\n%s\nservice logs:\n%s", err, out, tail(s.logs.String(), 200))
	}
	t.Logf("node batch.mjs (%s):\n%s", time.Since(started).Round(time.Millisecond), out)
}

// withoutRequestLines drops ingress's access log lines from service logs.
func withoutRequestLines(logs string) string {
	var keep []string
	for _, l := range strings.Split(logs, "\n") {
		if !strings.Contains(l, `"logger":"ingress.http"`) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// tail is the last n lines of text.
func tail(text string, n int) string {
	lines := strings.Split(text, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// uploadBatchFile uploads content as a batch input file and returns its ID.
func (s *stack) uploadBatchFile(key, name string, content []byte) string {
	s.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", name)
	_, _ = fw.Write(content)
	_ = mw.Close()
	req, _ := http.NewRequestWithContext(s.t.Context(), "POST", s.base+"/v1/files", &body)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer r.Body.Close()
	raw, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusOK {
		s.t.Fatalf("upload: %d %s", r.StatusCode, raw)
	}
	var f struct{ ID string }
	_ = jsonUnmarshal(raw, &f)
	return f.ID
}

// waitBatch polls a batch until done says so, and returns it.
func (s *stack) waitBatch(key, id string, timeout time.Duration, done func(map[string]any) bool) map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := s.call("GET", "/v1/batches/"+id, key, nil)
		if r.status != http.StatusOK {
			s.t.Fatalf("retrieve %s: %d %s", id, r.status, r.raw)
		}
		if done(r.body) {
			return r.body
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("batch %s not done within %s: %s\nlogs (but request lines):\n%s", id, timeout, r.raw, tail(withoutRequestLines(s.logs.String()), 150))
		}
		time.Sleep(200 * time.Millisecond) // polling with a deadline
	}
}

func batchEnded(b map[string]any) bool {
	switch b["status"] {
	case "completed", "failed", "expired", "cancelled":
		return true
	}
	return false
}

func batchDone(b map[string]any) int {
	c, _ := b["request_counts"].(map[string]any)
	done, _ := c["completed"].(float64)
	failed, _ := c["failed"].(float64)
	return int(done + failed)
}

// customIDs counts the custom_id of every line of a file.
func (s *stack) customIDs(key, fileID string, into map[string]int) {
	s.t.Helper()
	if fileID == "" {
		return
	}
	r := s.call("GET", "/v1/files/"+fileID+"/content", key, nil)
	if r.status != http.StatusOK {
		s.t.Fatalf("content of %s: %d %s", fileID, r.status, r.raw)
	}
	sc := bufio.NewScanner(bytes.NewReader(r.raw))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l struct {
			CustomID string `json:"custom_id"`
		}
		if err := jsonUnmarshal(sc.Bytes(), &l); err != nil {
			s.t.Fatalf("output line is not JSON: %v", err)
		}
		into[l.CustomID]++
	}
}

// TestBatchSurvivesKills kills the batch service, then the inference
// worker, each with SIGKILL in the middle of a batch, and starts them
// again: the batch completes and every custom_id is in the output
// exactly once.
func TestBatchSurvivesKills(t *testing.T) {
	// A killed instance's partitions go to the others after the session
	// timeout; the broker's floor (6 s) keeps the test short.
	fast := map[string]string{"TERROIR_KAFKA_SESSION_TIMEOUT": "6s"}
	s := startStackWith(t, batchStack, map[string]map[string]string{
		batchService:    {"TERROIR_BATCH_LEASE_TTL": "3s", "TERROIR_KAFKA_SESSION_TIMEOUT": "6s"},
		"inference":     fast,
		"contentsafety": fast,
		"ingress":       fast,
	})
	key := s.tenant("acme", "eu", true)
	const n = 1500
	var in bytes.Buffer
	for i := range n {
		fmt.Fprintf(&in, `{"custom_id":"line-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"chat","max_tokens":16,"messages":[{"role":"user","content":"Tell me about wave %d."}]}}`+"\n", i, i)
	}
	file := s.uploadBatchFile(key, "kills.jsonl", in.Bytes())
	r := s.call("POST", "/v1/batches", key, map[string]any{"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
	if r.status != http.StatusOK {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	id := r.body["id"].(string)
	s.waitBatch(key, id, 2*time.Minute, func(b map[string]any) bool { return batchDone(b) >= n/5 })
	s.kill(batchService)
	s.restart(batchService)
	s.waitBatch(key, id, 2*time.Minute, func(b map[string]any) bool { return batchDone(b) >= n/2 })
	s.kill("inference")
	s.restart("inference")
	b := s.waitBatch(key, id, 4*time.Minute, batchEnded)
	if b["status"] != "completed" {
		t.Fatalf("batch ended %v: %v", b["status"], b)
	}
	seen := map[string]int{}
	s.customIDs(key, str(b["output_file_id"]), seen)
	s.customIDs(key, str(b["error_file_id"]), seen)
	for i := range n {
		if c := seen[fmt.Sprintf("line-%d", i)]; c != 1 {
			t.Errorf("line-%d is in the output %d times", i, c)
		}
	}
	if len(seen) != n {
		t.Errorf("output has %d custom_ids, want %d", len(seen), n)
	}
}

func str(v any) string { s, _ := v.(string); return s }

// TestBatchCanary puts a canary in the lines of a batch of a Global
// Batch deployment: it is in no topic, blob, Redis key or value, or log
// line as plaintext, and the input file's blob is in the home
// geography's store only.
func TestBatchCanary(t *testing.T) {
	s := startStackWith(t, batchStack, nil)
	key := s.tenant("acme", "eu", true)
	s.op("PUT", "/mgmt/resources/acme/deployments/global", map[string]any{"sku": map[string]any{"name": "GlobalBatch", "capacity": 100},
		"properties": map[string]any{"model": map[string]any{"name": "terroir-ngram"}}}, http.StatusCreated)
	canary := "canary" + bustest.Namespace() + "okapi"
	var in bytes.Buffer
	for i := range 20 {
		fmt.Fprintf(&in, `{"custom_id":"c-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"global","max_tokens":16,"messages":[{"role":"user","content":"Please repeat %s back to me."}]}}`+"\n", i, canary)
	}
	file := s.uploadBatchFile(key, "canary-"+canary+".jsonl", in.Bytes())
	r := s.call("POST", "/v1/batches", key, map[string]any{"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h",
		"metadata": map[string]string{"note": canary}})
	if r.status != http.StatusOK {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	b := s.waitBatch(key, r.body["id"].(string), 2*time.Minute, batchEnded)
	if b["status"] != "completed" {
		t.Fatalf("batch ended %v: %v", b["status"], b)
	}
	s.noPlaintext(canary)
	blobs := 0
	err := filepath.Walk(s.env["TERROIR_BLOB_DIR"], func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(s.env["TERROIR_BLOB_DIR"], path)
		if !strings.HasPrefix(rel, "eu"+string(filepath.Separator)) {
			t.Errorf("a blob outside the home geography's store: %s", rel)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(raw, []byte(canary)) || strings.Contains(rel, canary) {
			t.Errorf("canary in plaintext in blob %s", rel)
		}
		blobs++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if blobs < 3 { // the input, the output and the error file
		t.Errorf("%d blobs, want the input, output and error files", blobs)
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// TestBatchDrop writes a JSONL file into a resource's drop inbox: the
// batch service turns it into a batch whose status, output and error
// files appear in the outbox, the input moves to processed/, and another
// resource can neither see the batch nor read its files.
func TestBatchDrop(t *testing.T) {
	s := startStackWith(t, batchStack, nil)
	key := s.tenant("acme", "eu", true)
	other := s.tenant("other", "eu", true)
	root := filepath.Join(s.env["TERROIR_BATCH_DROPS_DIR"], "acme")
	inbox := filepath.Join(root, "inbox")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(inbox); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no inbox at %s", inbox)
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline
	}
	var in bytes.Buffer
	for i := range 5 {
		fmt.Fprintf(&in, `{"custom_id":"d-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"chat","max_tokens":12,"messages":[{"role":"user","content":"Tell me about the lighthouse %d."}]}}`+"\n", i, i)
	}
	fmt.Fprintf(&in, `{"custom_id":"d-jail","method":"POST","url":"/v1/chat/completions","body":{"model":"chat","messages":[{"role":"user","content":%q}]}}`+"\n", sdkJailbreak)
	tmp := filepath.Join(inbox, ".questions.jsonl")
	if err := os.WriteFile(tmp, in.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(inbox, "questions.jsonl")); err != nil {
		t.Fatal(err)
	}
	statusFile := filepath.Join(root, "outbox", "questions.status.json")
	var status map[string]any
	deadline = time.Now().Add(2 * time.Minute)
	for {
		raw, err := os.ReadFile(statusFile)
		if err == nil && json.Unmarshal(raw, &status) == nil && batchEnded(status) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ended status file: %s\nlogs:\n%s", raw, tail(s.logs.String(), 80))
		}
		time.Sleep(200 * time.Millisecond) // polling with a deadline
	}
	if status["status"] != "completed" {
		t.Fatalf("drop batch ended %v: %v", status["status"], status)
	}
	read := func(name string) map[string]int {
		raw, err := os.ReadFile(filepath.Join(root, "outbox", name))
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]int{}
		for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			if l == "" {
				continue
			}
			var v struct {
				CustomID string `json:"custom_id"`
			}
			if err := json.Unmarshal([]byte(l), &v); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			ids[v.CustomID]++
		}
		return ids
	}
	out, errs := read("questions.output.jsonl"), read("questions.errors.jsonl")
	if len(out) != 5 || len(errs) != 1 || errs["d-jail"] != 1 {
		t.Errorf("output %v, errors %v", out, errs)
	}
	if _, err := os.Stat(filepath.Join(root, "processed", "questions.jsonl")); err != nil {
		t.Errorf("the input is not in processed/: %v", err)
	}
	if _, err := os.Stat(filepath.Join(inbox, "questions.jsonl")); !os.IsNotExist(err) {
		t.Errorf("the input is still in the inbox: %v", err)
	}
	// The batch is acme's: its key finds it, the other resource's does not.
	id := str(status["id"])
	if r := s.call("GET", "/v1/batches/"+id, key, nil); r.status != http.StatusOK {
		t.Errorf("acme retrieving its drop batch: %d %s", r.status, r.raw)
	}
	for _, path := range []string{"/v1/batches/" + id, "/v1/files/" + str(status["output_file_id"]) + "/content", "/v1/files/" + str(status["input_file_id"])} {
		if r := s.call("GET", path, other, nil); r.status != http.StatusNotFound {
			t.Errorf("another resource GET %s: %d", path, r.status)
		}
	}
	otherOut, _ := os.ReadDir(filepath.Join(s.env["TERROIR_BATCH_DROPS_DIR"], "other", "outbox"))
	if len(otherOut) != 0 {
		t.Errorf("another resource's outbox has %d files", len(otherOut))
	}
}
