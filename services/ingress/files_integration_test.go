package main

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/daemon/daemontest"
)

// formField is one field of a multipart upload; a file when filename is
// set.
type formField struct{ name, filename, value string }

// multipartBody builds a multipart/form-data body the way the official
// SDKs send one: the file as a part with a filename and
// application/octet-stream, the other fields as plain parts, in the order
// given.
func multipartBody(t *testing.T, fields ...formField) (string, []byte) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, f := range fields {
		if f.filename != "" {
			h := textproto.MIMEHeader{}
			h.Set("Content-Disposition", `form-data; name="`+f.name+`"; filename="`+f.filename+`"`)
			h.Set("Content-Type", "application/octet-stream")
			w, err := mw.CreatePart(h)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = w.Write([]byte(f.value))
			continue
		}
		if err := mw.WriteField(f.name, f.value); err != nil {
			t.Fatal(err)
		}
	}
	_ = mw.Close()
	return mw.FormDataContentType(), b.Bytes()
}

// send sends body with contentType; without length, the body is sent
// chunked (no Content-Length), as a stream of unknown size.
func (a client) send(method, path, cred, contentType string, body []byte, length bool) reply {
	a.t.Helper()
	var rd io.Reader = bytes.NewReader(body)
	if !length {
		pr, pw := io.Pipe()
		go func() { _, err := pw.Write(body); pw.CloseWithError(err) }()
		rd = pr
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if !length {
		req.ContentLength = -1
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+cred)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	r := reply{status: resp.StatusCode, header: resp.Header}
	r.raw, _ = io.ReadAll(resp.Body)
	_ = json.Unmarshal(r.raw, &r.body)
	return r
}

// upload uploads content as filename with purpose (file part first, as
// the Node SDK orders them) and wants want.
func (a client) upload(path, cred, purpose, filename, content string, want int) reply {
	a.t.Helper()
	ct, body := multipartBody(a.t, formField{"file", filename, content}, formField{name: "purpose", value: purpose})
	r := a.send("POST", path, cred, ct, body, true)
	if r.status != want {
		a.t.Fatalf("upload to %s = %d, want %d: %s", path, r.status, want, r.raw)
	}
	return r
}

// blobFiles lists the files under dir (none when it does not exist).
func blobFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFilesRoundTrip(t *testing.T) {
	t.Parallel()
	a, s, _, key := appSetup(t, nil)
	const content = "{\"custom_id\":\"1\"}\n{\"custom_id\":\"2\"}\n"

	up := a.upload("/v1/files", key, "batch", "requests.jsonl", content, http.StatusOK).body
	id, _ := up["id"].(string)
	if !strings.HasPrefix(id, "file-") || up["object"] != "file" || up["bytes"] != float64(len(content)) || up["filename"] != "requests.jsonl" ||
		up["purpose"] != "batch" || up["status"] != "processed" || up["created_at"] == nil {
		t.Fatalf("uploaded file object = %v", up)
	}
	// OpenAI's default: a batch input uploaded without expires_after
	// expires after 30 days.
	if up["expires_at"] != up["created_at"].(float64)+30*24*3600 {
		t.Errorf("a batch file uploaded without expires_after: expires_at %v, want created_at + 30 days", up["expires_at"])
	}

	// Azure: purpose first, expires_after in the dot form; 201 and Location.
	ct, body := multipartBody(t, formField{name: "purpose", value: "fine-tune"}, formField{name: "expires_after.anchor", value: "created_at"},
		formField{name: "expires_after.seconds", value: "1209600"}, formField{"file", "train.jsonl", "{}\n"})
	r := a.send("POST", "/openai/files?api-version=2024-10-21", key, ct, body, true)
	azID, _ := r.body["id"].(string)
	if r.status != http.StatusCreated || r.header.Get("Location") != "/openai/files/"+azID || r.body["expires_at"] != r.body["created_at"].(float64)+1209600 {
		t.Fatalf("azure upload = %d %v %s", r.status, r.header, r.raw)
	}
	// OpenAI's bracket form.
	ct, body = multipartBody(t, formField{"file", "notes.txt", "hello"}, formField{name: "purpose", value: "assistants"},
		formField{name: "expires_after[anchor]", value: "created_at"}, formField{name: "expires_after[seconds]", value: "3600"})
	r = a.send("POST", "/v1/files", key, ct, body, true)
	if r.status != http.StatusOK || r.body["expires_at"] != r.body["created_at"].(float64)+3600 {
		t.Fatalf("bracket expires_after = %d %s", r.status, r.raw)
	}
	thirdID := r.body["id"].(string)

	list := a.do("GET", "/v1/files", key, nil)
	data, _ := list.body["data"].([]any)
	if list.status != http.StatusOK || list.body["object"] != "list" || len(data) != 3 || list.body["has_more"] != false {
		t.Fatalf("list = %d %s", list.status, list.raw)
	}
	if batch := a.do("GET", "/openai/files?api-version=2024-10-21&purpose=batch", key, nil); len(batch.body["data"].([]any)) != 1 ||
		batch.body["data"].([]any)[0].(map[string]any)["id"] != id {
		t.Fatalf("list purpose=batch = %s", batch.raw)
	}
	if got := a.do("GET", "/v1/files/"+id, key, nil); got.status != http.StatusOK || got.body["id"] != id || got.body["bytes"] != float64(len(content)) {
		t.Fatalf("retrieve = %d %s", got.status, got.raw)
	}
	for _, path := range []string{"/v1/files/" + id + "/content", "/openai/files/" + id + "/content?api-version=2024-10-21", "/openai/v1/files/" + id + "/content"} {
		req, _ := http.NewRequest("GET", a.base+path, nil)
		req.Header.Set("api-key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(got) != content || resp.Header.Get("Content-Type") != "application/octet-stream" {
			t.Fatalf("content at %s = %d %q", path, resp.StatusCode, got)
		}
	}
	// Another instance finds the file at once.
	other := startAnother(t, s)
	if got := other.do("GET", "/v1/files/"+id, key, nil); got.status != http.StatusOK {
		t.Fatalf("retrieve from another instance = %d %s", got.status, got.raw)
	}

	dir := filepath.Join(s.Env["TERROIR_BLOB_DIR"], "eu")
	if n := len(blobFiles(t, dir)); n != 3 {
		t.Fatalf("%d blobs under %s, want 3", n, dir)
	}
	del := a.do("DELETE", "/v1/files/"+id, key, nil)
	if del.status != http.StatusOK || del.body["id"] != id || del.body["object"] != "file" || del.body["deleted"] != true || len(del.body) != 3 {
		t.Fatalf("delete = %d %s", del.status, del.raw)
	}
	for _, path := range []string{"/v1/files/" + id, "/v1/files/" + id + "/content"} {
		if got := a.do("GET", path, key, nil); got.status != http.StatusNotFound || got.errMessage() == "" {
			t.Errorf("GET %s after delete = %d %s", path, got.status, got.raw)
		}
	}
	if got := a.do("DELETE", "/v1/files/"+id, key, nil); got.status != http.StatusNotFound {
		t.Errorf("second delete = %d", got.status)
	}
	for _, p := range blobFiles(t, dir) {
		if strings.Contains(p, id) {
			t.Errorf("the deleted file's blob is still at %s", p)
		}
	}
	if got := other.do("GET", "/v1/files", key, nil); len(got.body["data"].([]any)) != 2 {
		t.Errorf("another instance lists %s after the delete", got.raw)
	}
	_ = thirdID
}

func TestFilesBadInputNamesTheParam(t *testing.T) {
	t.Parallel()
	a, _, _, key := appSetup(t, nil)
	file := formField{"file", "a.jsonl", "{}\n"}
	purpose := func(p string) formField { return formField{name: "purpose", value: p} }
	cases := []struct {
		name   string
		path   string
		fields []formField
		param  string
	}{
		{"missing purpose", "/v1/files", []formField{file}, "purpose"},
		{"unknown purpose", "/v1/files", []formField{file, purpose("vision-pro")}, "purpose"},
		{"output purpose", "/v1/files", []formField{file, purpose("batch_output")}, "purpose"},
		{"missing file", "/v1/files", []formField{purpose("batch")}, "file"},
		{"file without filename", "/v1/files", []formField{{name: "file", value: "{}"}, purpose("batch")}, "file"},
		{"unknown field", "/v1/files", []formField{file, purpose("batch"), {name: "purpouse", value: "x"}}, "purpouse"},
		{"expiry too short", "/v1/files", []formField{file, purpose("batch"), {name: "expires_after[anchor]", value: "created_at"}, {name: "expires_after[seconds]", value: "60"}}, "expires_after.seconds"},
		{"azure expiry too short", "/openai/files?api-version=2024-10-21", []formField{file, purpose("batch"), {name: "expires_after.anchor", value: "created_at"}, {name: "expires_after.seconds", value: "3600"}}, "expires_after.seconds"},
		{"expiry anchor", "/v1/files", []formField{file, purpose("batch"), {name: "expires_after[anchor]", value: "last_active_at"}, {name: "expires_after[seconds]", value: "3600"}}, "expires_after.anchor"},
		{"missing api-version", "/openai/files", []formField{file, purpose("batch")}, "api-version"},
	}
	for _, c := range cases {
		ct, body := multipartBody(t, c.fields...)
		if r := a.send("POST", c.path, key, ct, body, true); r.status != http.StatusBadRequest || r.errParam() != c.param {
			t.Errorf("%s: %d %s, want 400 naming %s", c.name, r.status, r.raw, c.param)
		}
	}
	if r := a.send("POST", "/v1/files", key, "application/json", []byte(`{"purpose":"batch"}`), true); r.status != http.StatusBadRequest || r.errParam() != "file" {
		t.Errorf("JSON upload = %d %s", r.status, r.raw)
	}
	for _, q := range []struct{ query, param string }{{"limit=0", "limit"}, {"limit=10001", "limit"}, {"order=sideways", "order"},
		{"purpose=pictures", "purpose"}, {"after=file-00000000000000000000000000000000", "after"}} {
		if r := a.do("GET", "/v1/files?"+q.query, key, nil); r.status != http.StatusBadRequest || r.errParam() != q.param {
			t.Errorf("list ?%s = %d %s", q.query, r.status, r.raw)
		}
	}
}

func TestFilesSizeLimits(t *testing.T) {
	t.Parallel()
	a, s, _, key := appSetup(t, map[string]string{"TERROIR_FILES_MAX_BATCH_BYTES": "1024", "TERROIR_FILES_MAX_BYTES": "4096"})
	dir := s.Env["TERROIR_BLOB_DIR"]
	big := strings.Repeat("x", 2000)
	huge := strings.Repeat("y", 200<<10) // past the limit and the multipart slack
	cases := []struct {
		name          string
		purpose, body string
		purposeFirst  bool
		length        bool
		want          int
	}{
		{"batch over its limit, with length", "batch", big, false, true, 413},
		{"batch over its limit, streamed", "batch", big, false, false, 413},
		{"batch over its limit, purpose first, streamed", "batch", big, true, false, 413},
		{"other over its limit, streamed", "assistants", huge, true, false, 413},
		{"other over its limit, with length", "assistants", huge, false, true, 413},
		{"other within its limit", "assistants", big, false, false, 200},
	}
	for _, c := range cases {
		fields := []formField{{"file", "f.jsonl", c.body}, {name: "purpose", value: c.purpose}}
		if c.purposeFirst {
			fields[0], fields[1] = fields[1], fields[0]
		}
		ct, body := multipartBody(t, fields...)
		r := a.send("POST", "/v1/files", key, ct, body, c.length)
		if r.status != c.want || c.want == 413 && (r.errParam() != "file" || !strings.Contains(r.errMessage(), "limit")) {
			t.Errorf("%s: %d %s, want %d", c.name, r.status, r.raw, c.want)
		}
	}
	if got := blobFiles(t, dir); len(got) != 1 {
		t.Errorf("blobs after the refused uploads: %v, want only the accepted one", got)
	}
}

func TestFilesPagination(t *testing.T) {
	t.Parallel()
	a, _, _, key := appSetup(t, nil)
	var ids []string
	for range 5 {
		ids = append(ids, a.upload("/v1/files", key, "user_data", "x.txt", "x", http.StatusOK).body["id"].(string))
	}
	for _, order := range []string{"asc", "desc"} {
		var got []string
		after := ""
		for pages := 0; ; pages++ {
			q := "/v1/files?limit=2&order=" + order
			if after != "" {
				q += "&after=" + after
			}
			r := a.do("GET", q, key, nil)
			data := r.body["data"].([]any)
			for _, d := range data {
				got = append(got, d.(map[string]any)["id"].(string))
			}
			if len(data) > 0 && (r.body["first_id"] != data[0].(map[string]any)["id"] || r.body["last_id"] != data[len(data)-1].(map[string]any)["id"]) {
				t.Errorf("first_id/last_id of %s", r.raw)
			}
			if r.body["has_more"] != true {
				break
			}
			after = r.body["last_id"].(string)
			if pages > 5 {
				t.Fatal("pagination does not end")
			}
		}
		if len(got) != 5 {
			t.Fatalf("%s pages = %v", order, got)
		}
		if order == "desc" && got[0] != ids[4] && got[4] != ids[0] || order == "asc" && got[0] != ids[0] && got[4] != ids[4] {
			t.Errorf("%s order = %v, uploads %v", order, got, ids)
		}
	}
	if r := a.do("GET", "/v1/files", key, nil); len(r.body["data"].([]any)) != 5 {
		t.Errorf("default limit lists %s", r.raw)
	}
}

// TestFilesStayWithTheirResourceAndGeography: another resource's key gets
// 404 for every file ID of a resource, and lists nothing of it; bytes are
// stored only in the owner's home geography's store, sealed, and neither
// the content nor the filename appears in the clear on any topic or in
// any blob.
func TestFilesStayWithTheirResourceAndGeography(t *testing.T) {
	t.Parallel()
	a, s, _, key := appSetup(t, nil)
	a.op("PUT", "/mgmt/resources/globex", resourceBody("us"), http.StatusCreated)
	usKey := a.op("POST", "/mgmt/resources/globex/listKeys", nil, http.StatusOK).body["key1"].(string)

	canary := "canaryzebra" + strings.ReplaceAll(time.Now().Format(time.RFC3339Nano), ":", "")
	euID := a.upload("/v1/files", key, "batch", canary+".jsonl", "{\"note\":\""+canary+"\"}\n", http.StatusOK).body["id"].(string)
	usID := a.upload("/v1/files", usKey, "assistants", "us.txt", canary, http.StatusOK).body["id"].(string)

	for _, c := range []struct{ method, path string }{{"GET", "/v1/files/" + euID}, {"GET", "/v1/files/" + euID + "/content"},
		{"DELETE", "/v1/files/" + euID}, {"GET", "/openai/files/" + euID + "?api-version=2024-10-21"}} {
		if r := a.do(c.method, c.path, usKey, nil); r.status != http.StatusNotFound || strings.Contains(string(r.raw), canary) {
			t.Errorf("%s %s with another resource's key = %d %s", c.method, c.path, r.status, r.raw)
		}
	}
	if r := a.do("GET", "/v1/files", usKey, nil); strings.Contains(string(r.raw), euID) || len(r.body["data"].([]any)) != 1 {
		t.Errorf("another resource lists %s", r.raw)
	}
	if r := a.do("GET", "/v1/files/"+euID, key, nil); r.status != http.StatusOK {
		t.Fatalf("the owner lost its file: %d", r.status)
	}

	root := s.Env["TERROIR_BLOB_DIR"]
	for geo, want := range map[string]string{"eu": euID, "us": usID} {
		got := blobFiles(t, filepath.Join(root, geo))
		if len(got) != 1 || !strings.Contains(got[0], want) {
			t.Errorf("blobs of %s = %v, want only %s", geo, got, want)
		}
	}
	for _, p := range blobFiles(t, root) {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte(canary)) {
			t.Errorf("canary in the clear in blob %s", p)
		}
	}
	for _, r := range allRecords(t, s) {
		var hs bytes.Buffer
		for _, h := range r.Headers {
			hs.WriteString(h.Key + "=" + string(h.Value) + "\n")
		}
		if bytes.Contains(r.Value, []byte(canary)) || bytes.Contains(r.Key, []byte(canary)) || strings.Contains(hs.String(), canary) {
			t.Errorf("canary in the clear on %s", r.Topic)
		}
	}
}

// allRecords reads every record of every topic of s's namespace, from
// the start to the current end.
func allRecords(t *testing.T, s *daemontest.Service) []*kgo.Record {
	t.Helper()
	out := bustest.NamespaceRecords(t, strings.Split(s.Env["TERROIR_KAFKA_BROKERS"], ","), s.Env["TERROIR_KAFKA_NAMESPACE"])
	if len(out) == 0 {
		t.Fatal("no records at all")
	}
	return out
}

// TestDeletingAResourceDeletesItsFiles: the files of a deleted resource
// are gone from its blob store and from the file list, and a resource
// created anew under its name starts with none.
func TestDeletingAResourceDeletesItsFiles(t *testing.T) {
	t.Parallel()
	a, s, _, key := appSetup(t, nil)
	id := a.upload("/v1/files", key, "assistants", "old.txt", "old content", http.StatusOK).body["id"].(string)
	a.op("DELETE", "/mgmt/resources/acme", nil, http.StatusNoContent)
	if got := blobFiles(t, filepath.Join(s.Env["TERROIR_BLOB_DIR"], "eu")); len(got) != 0 {
		t.Errorf("blobs of the deleted resource: %v", got)
	}
	a.op("PUT", "/mgmt/resources/acme", resourceBody("eu"), http.StatusCreated)
	key = a.op("POST", "/mgmt/resources/acme/listKeys", nil, http.StatusOK).body["key1"].(string)
	if r := a.do("GET", "/v1/files", key, nil); r.status != http.StatusOK || len(r.body["data"].([]any)) != 0 {
		t.Errorf("the new acme lists %d %s", r.status, r.raw)
	}
	if r := a.do("GET", "/v1/files/"+id, key, nil); r.status != http.StatusNotFound {
		t.Errorf("the new acme reads the old acme's file: %d %s", r.status, r.raw)
	}
}
