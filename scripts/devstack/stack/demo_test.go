package stack

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// mgmtServer answers the management calls EnsureDemo makes the way the
// management API does: keys are shown only when issued.
type mgmtServer struct {
	mu          sync.Mutex
	resource    bool
	deployments map[string]string
	keys        map[string]string // slot → key
	calls       []string
	n           int
}

func (m *mgmtServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, r.Method+" "+r.URL.Path)
	auth := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	issue := func(slot string) string { m.n++; k := "demo-key-" + string(rune('a'+m.n)); m.keys[slot] = k; return k }
	switch p := r.URL.Path; {
	case auth != "op" && !(r.Method == "GET" && p == "/mgmt/resources/demo" && auth == m.keys["key1"] && m.resource):
		w.WriteHeader(http.StatusUnauthorized)
	case p == "/mgmt/resources/demo" && r.Method == "GET":
		if !m.resource {
			w.WriteHeader(http.StatusNotFound)
		}
	case p == "/mgmt/resources/demo" && r.Method == "PUT":
		m.resource = true
		w.WriteHeader(http.StatusCreated)
	case strings.HasPrefix(p, "/mgmt/resources/demo/deployments/"):
		name := strings.TrimPrefix(p, "/mgmt/resources/demo/deployments/")
		if r.Method == "GET" {
			if _, ok := m.deployments[name]; !ok {
				w.WriteHeader(http.StatusNotFound)
			}
			return
		}
		var body struct {
			Properties struct {
				Model struct{ Name string } `json:"model"`
			} `json:"properties"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		m.deployments[name] = body.Properties.Model.Name
		w.WriteHeader(http.StatusCreated)
	case p == "/mgmt/resources/demo/listKeys":
		out := map[string]string{}
		for _, s := range []string{"key1", "key2"} {
			if m.keys[s] == "" {
				out[s] = issue(s)
			}
		}
		_ = json.NewEncoder(w).Encode(out)
	case p == "/mgmt/resources/demo/regenerateKey":
		_ = json.NewEncoder(w).Encode(map[string]string{"key1": issue("key1")})
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func TestDemoIsCreatedOnceAndItsKeyKept(t *testing.T) {
	m := &mgmtServer{deployments: map[string]string{}, keys: map[string]string{}}
	srv := httptest.NewServer(m)
	defer srv.Close()
	keyFile := filepath.Join(t.TempDir(), "state", "demo-key")

	d, err := EnsureDemo(t.Context(), srv.Client(), srv.URL, "op", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !m.resource || m.deployments["chat"] != "terroir-ngram" || m.deployments["embed"] != "terroir-embed" || d.Key == "" || d.Key != m.keys["key1"] {
		t.Fatalf("after the first run: %+v %+v", m, d)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	// A restart reuses everything, the key included.
	m.calls = nil
	again, err := EnsureDemo(t.Context(), srv.Client(), srv.URL, "op", keyFile)
	if err != nil || again.Key != d.Key {
		t.Fatalf("second run: %+v %v", again, err)
	}
	for _, c := range m.calls {
		if strings.HasPrefix(c, "PUT") || strings.HasPrefix(c, "POST") {
			t.Errorf("a restart changed something: %s", c)
		}
	}
	// A lost key file gets key1 regenerated, and kept.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	third, err := EnsureDemo(t.Context(), srv.Client(), srv.URL, "op", keyFile)
	if err != nil || third.Key == d.Key || third.Key != m.keys["key1"] {
		t.Fatalf("after losing the key file: %+v %v", third, err)
	}
	if raw, _ := os.ReadFile(keyFile); strings.TrimSpace(string(raw)) != third.Key {
		t.Fatal("the regenerated key was not kept")
	}
}

func TestDemoCurl(t *testing.T) {
	c := DemoCurl("http://127.0.0.1:8080", "k")
	if !strings.Contains(c, "http://127.0.0.1:8080/v1/chat/completions") || !strings.Contains(c, "Bearer k") || !strings.Contains(c, `"model":"chat"`) {
		t.Fatal(c)
	}
}
