package stack

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/services/review/pki"
)

// TestReviewPKIIsMadeOnceAndKept creates the dev stack's review material,
// then asks again: the CA and the certificates already issued are kept,
// so certificates imported into a browser stay valid across restarts,
// and every person's certificate is issued by the CA in their name.
func TestReviewPKIIsMadeOnceAndKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "review")
	first, err := EnsureReviewPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(first.CA)
	ritaPEM, _ := os.ReadFile(first.Persons[0].Cert)
	again, err := EnsureReviewPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	if caPEM2, _ := os.ReadFile(again.CA); !bytes.Equal(caPEM, caPEM2) {
		t.Error("the review CA was replaced on the second start")
	}
	if rita2, _ := os.ReadFile(again.Persons[0].Cert); !bytes.Equal(ritaPEM, rita2) {
		t.Error("a person's certificate was reissued on the second start")
	}
	ca, err := pki.LoadCA(again.CA, again.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	people, _ := os.ReadFile(again.People)
	for _, p := range again.Persons {
		pair, err := pki.LoadPair(p.Cert, p.Key)
		if err != nil {
			t.Fatal(err)
		}
		if pair.Cert.Subject.CommonName != p.Name || pair.Cert.CheckSignatureFrom(ca.Cert) != nil {
			t.Errorf("certificate of %s names %q or is not issued by the review CA", p.Name, pair.Cert.Subject.CommonName)
		}
		if !strings.Contains(string(people), "name: "+p.Name) {
			t.Errorf("people.yaml lacks %s", p.Name)
		}
		if fi, err := os.Stat(p.Key); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("key of %s is not private to its owner: %v %v", p.Name, fi.Mode(), err)
		}
	}
	// A certificate from another CA is replaced by one from the review CA.
	other, _ := pki.NewCA("another CA")
	stranger, _ := other.Client("rita.reviewer")
	if _, _, err := stranger.WritePEM(dir, "rita.reviewer"); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureReviewPKI(dir); err != nil {
		t.Fatal(err)
	}
	if pair, err := pki.LoadPair(first.Persons[0].Cert, first.Persons[0].Key); err != nil || pair.Cert.CheckSignatureFrom(ca.Cert) != nil {
		t.Errorf("a certificate from another CA was kept: %v", err)
	}
}
