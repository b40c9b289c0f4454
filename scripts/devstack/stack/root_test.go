package stack

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFindRoot(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "go.work"), []byte("go 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deep := filepath.Join(root, "scripts", "devstack")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, start := range []string{root, deep} {
		t.Run(filepath.Base(start), func(t *testing.T) {
			t.Parallel()
			got, err := FindRoot(start)
			if err != nil {
				t.Fatal(err)
			}
			if got != root {
				t.Errorf("FindRoot(%s) = %s, want %s", start, got, root)
			}
		})
	}
}
