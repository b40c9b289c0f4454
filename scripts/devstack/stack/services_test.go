package stack

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestBuildNamesServiceThatFails(t *testing.T) {
	t.Parallel()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("the go command is not on PATH: the build test runs it")
	}
	root := t.TempDir()
	write := func(path, text string) {
		t.Helper()
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.work", "go 1.26\n\nuse (\n\t./services/good\n\t./services/bad\n)\n")
	write("services/good/go.mod", "module example.com/services/good\n\ngo 1.26\n")
	write("services/good/main.go", "package main\n\nfunc main() {}\n")
	write("services/bad/go.mod", "module example.com/services/bad\n\ngo 1.26\n")
	write("services/bad/main.go", "package main\n\nfunc main() { undefinedThing() }\n")
	bin := filepath.Join(root, ".terroir", "bin")

	t.Run("one fails", func(t *testing.T) {
		err := Build(t.Context(), goCmd, root, bin, []string{"good", "bad"})
		var be *BuildError
		if !errors.As(err, &be) {
			t.Fatalf("Build error = %v, want *BuildError", err)
		}
		if !slices.Equal(be.Order, []string{"bad"}) {
			t.Errorf("failed services = %v, want [bad]", be.Order)
		}
		if msg := err.Error(); !strings.Contains(msg, "service bad did not build") || !strings.Contains(msg, "undefinedThing") {
			t.Errorf("error message = %q", msg)
		}
	})
	t.Run("all build", func(t *testing.T) {
		if err := Build(t.Context(), goCmd, root, bin, []string{"good"}); err != nil {
			t.Fatalf("Build: %v", err)
		}
		if _, err := os.Stat(filepath.Join(bin, "good")); err != nil {
			t.Errorf("binary missing: %v", err)
		}
	})
}

func TestMergeEnv(t *testing.T) {
	t.Parallel()
	got := MergeEnv([]string{"A=1", "TERROIR_ADMIN_ADDR=x", "B=2"}, map[string]string{"TERROIR_ADMIN_ADDR": "127.0.0.1:9101"})
	want := []string{"A=1", "B=2", "TERROIR_ADMIN_ADDR=127.0.0.1:9101"}
	if !slices.Equal(got, want) {
		t.Errorf("MergeEnv = %v, want %v", got, want)
	}
}
