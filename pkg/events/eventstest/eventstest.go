// Package eventstest validates event payloads against their JSON Schemas
// in the repository's schemas/events folder, so tests can check what a
// service really produced.
package eventstest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/terroir-ai/terroir/pkg/events"
)

// IDBase is the prefix of every event schema's $id.
const IDBase = "https://terroir.dev/schemas/events/"

// Dir finds schemas/events by walking up from the working directory.
func Dir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "schemas", "events")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("schemas/events not found above the working directory")
		}
		dir = parent
	}
}

// Load reads and compiles the schema of typ with format and content
// assertions on, so date-time and base64 values are checked too. It
// returns the schema document as well. Each call uses its own compiler,
// which keeps parallel tests independent.
func Load(t testing.TB, typ events.Type) (map[string]any, *jsonschema.Schema) {
	t.Helper()
	path := filepath.Join(Dir(t), typ.String()+".json")
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("opening schema of %s: %v", typ, err)
	}
	defer f.Close()
	raw, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	doc, ok := raw.(map[string]any)
	if !ok {
		t.Fatalf("%s: top level is %T, want an object", path, raw)
	}
	id, _ := doc["$id"].(string)
	if want := IDBase + typ.String() + ".json"; id != want {
		t.Fatalf("%s: $id = %q, want %q", path, id, want)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.AssertContent()
	if err := c.AddResource(id, doc); err != nil {
		t.Fatalf("adding %s: %v", path, err)
	}
	sch, err := c.Compile(id)
	if err != nil {
		t.Fatalf("compiling %s: %v", path, err)
	}
	return doc, sch
}

// Validate validates encoded JSON against sch.
func Validate(sch *jsonschema.Schema, b []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return err
	}
	return sch.Validate(inst)
}
