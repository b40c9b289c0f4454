package stack

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOperatorTokenIsCreatedOnceAndPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "operator-token")
	tok, err := EnsureOperatorToken(path)
	if err != nil || len(tok) < 32 {
		t.Fatalf("token %q, %v", tok, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode: %v %v", st.Mode(), err)
	}
	again, err := EnsureOperatorToken(path)
	if err != nil || again != tok {
		t.Fatalf("second call gave %q (%v), want the stored token", again, err)
	}
	if err := os.WriteFile(path, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureOperatorToken(path); err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Fatalf("short token accepted: %v", err)
	}
}
