package audit

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/events"
)

// The vectors were computed from the encoding documented on Hash, by a
// separate implementation, so a change of the encoding shows here.
func TestHashFollowsTheDocumentedEncoding(t *testing.T) {
	tests := []struct {
		name string
		e    events.AuditEntry
		want string
	}{
		{"with detail", events.AuditEntry{
			Geo: "eu", Seq: 2, PrevHash: "e006a235d637881e68fec3edc7a5b454ac365a467aeac1f48bc36df1a6676ba5",
			Actor: "CN=jonas.manager,O=Terroir Trust and Safety,C=DE", Action: events.AuditAccessApproved,
			Subject: "req_01J9Z6R3X8Q2M4N7P5T1V0W2Y3",
			Detail:  map[string]string{"grant_id": "grant_01J9ZB4K7M", "expires_at": "2025-03-15T11:02:30Z"},
			// Another zone, same instant: the hash takes UTC.
			At: time.Date(2025, 3, 15, 11, 2, 30, 500_000_000, time.FixedZone("CET", 3600)),
		}, "4bafbe2d548c24b726e68f148158f7a523be9baa6f7b478ebf0683f3dbecc406"},
		{"first entry, no detail", events.AuditEntry{
			Geo: "eu", Seq: 1, Actor: "CN=ana", Action: events.AuditView, Subject: "req_1",
			At: time.Date(2025, 3, 15, 10, 2, 11, 0, time.UTC),
		}, "4d814c4ae45e63c7c9b080bf1a2e2c7eff96983b0939a5c8cdc084bf4cfab726"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Hash(tc.e); got != tc.want {
				t.Fatalf("Hash = %s, want %s", got, tc.want)
			}
			// Hash is not covered by itself.
			tc.e.Hash = "ab"
			if got := Hash(tc.e); got != tc.want {
				t.Fatal("Hash depends on the Hash field")
			}
		})
	}
}

func TestHashSeparatesFields(t *testing.T) {
	base := events.AuditEntry{Geo: "eu", Seq: 1, Actor: "ab", Action: events.AuditView, Subject: "c", At: time.Unix(0, 0)}
	moved := base
	moved.Actor, moved.Subject = "a", "bc"
	if Hash(base) == Hash(moved) {
		t.Fatal("moving a byte between fields keeps the hash")
	}
	d1, d2 := base, base
	d1.Detail = map[string]string{"a": "b=c"}
	d2.Detail = map[string]string{"a=b": "c"}
	if Hash(d1) == Hash(d2) {
		t.Fatal("moving a byte between a detail key and value keeps the hash")
	}
	empty := base
	empty.Detail = map[string]string{}
	if Hash(empty) != Hash(base) {
		t.Fatal("an empty detail map hashes unlike an absent one, but both encode alike on the wire")
	}
}

func TestHashSurvivesTheWire(t *testing.T) {
	e := events.AuditEntry{
		Geo: "us", Seq: 7, PrevHash: "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
		Actor: "CN=rév,O=Terroir", Action: events.AuditDecision, Subject: "case_1",
		Detail: map[string]string{"decision": "warn", "ünïcode": "✓"},
		At:     time.Date(2025, 3, 15, 10, 2, 11, 123456789, time.FixedZone("X", -7*3600)),
	}
	e.Hash = Hash(e)
	raw, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var back events.AuditEntry
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if Hash(back) != e.Hash {
		t.Fatal("an entry read back from JSON no longer matches its hash")
	}
}
