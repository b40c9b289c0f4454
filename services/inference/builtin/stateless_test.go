package builtin

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The package may not log, write files, or talk to the network: a prompt or
// an output must have no way out of it but the caller's return values and
// emit callback. Its imports are the proof.
func TestPackageCannotLogOrWrite(t *testing.T) {
	t.Parallel()
	// Each entry forbids the package and everything under it.
	forbidden := []string{"log", "os", "io/ioutil", "net", "syscall", "go.uber.org/zap", "github.com/terroir-ai/terroir/pkg/logging"}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if path == bad || strings.HasPrefix(path, bad+"/") {
					t.Errorf("%s imports %s", name, path)
				}
			}
		}
		checked++
	}
	if checked < 5 {
		t.Fatalf("checked only %d source files", checked)
	}
}
