// Package signing signs the review records that give access — grants and
// flags — so that whoever can write to a geography's Redis cannot mint
// access there: a record is honoured only with a valid signature.
//
// A signature is "<key ID>.<MAC>": an HMAC-SHA256 (keys.DataKey.MAC) of the
// record's kind, geography and fields under the geography's
// abuse-monitoring data key, which lives wrapped on the Kafka keys topic
// and never in Redis. Carrying the key ID keeps records signed before the
// key rolled verifiable for as long as they live.
package signing

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/terroir-ai/terroir/pkg/keys"
)

// Kinds of signed records.
const (
	KindGrant = "grant"
	KindFlag  = "flag"
)

// Signer signs and verifies records under the data keys of mgr.
type Signer struct{ mgr *keys.Manager }

// New returns a Signer over the bus's data-key manager.
func New(mgr *keys.Manager) (*Signer, error) {
	if mgr == nil {
		return nil, errors.New("signing: a data-key manager is required")
	}
	return &Signer{mgr: mgr}, nil
}

func message(kind, geo string, fields []string) []byte {
	// NUL cannot occur in an ID, a name or a timestamp, so the encoding
	// is unambiguous.
	return []byte("terroir review " + kind + "\x00" + geo + "\x00" + strings.Join(fields, "\x00"))
}

// Sign returns the signature of a record of kind in geo with fields.
func (s *Signer) Sign(ctx context.Context, kind, geo string, fields ...string) (string, error) {
	k, err := s.mgr.AbuseKey(ctx, geo)
	if err != nil {
		return "", fmt.Errorf("signing a %s in %s: %w", kind, geo, err)
	}
	return k.ID + "." + base64.RawURLEncoding.EncodeToString(k.MAC(message(kind, geo, fields))), nil
}

// ErrInvalid is a missing, malformed or wrong signature.
var ErrInvalid = errors.New("invalid signature")

// Verify checks sig against a record of kind in geo with fields: nil when
// it holds, ErrInvalid when it does not, another error when the key
// cannot be read now (worth retrying).
func (s *Signer) Verify(ctx context.Context, sig, kind, geo string, fields ...string) error {
	id, mac, ok := strings.Cut(sig, ".")
	raw, err := base64.RawURLEncoding.DecodeString(mac)
	if !ok || id == "" || err != nil {
		return ErrInvalid
	}
	k, err := s.mgr.ByID(ctx, id)
	if errors.Is(err, keys.ErrKeyNotFound) {
		return ErrInvalid
	}
	if err != nil {
		return fmt.Errorf("verifying a %s in %s: %w", kind, geo, err)
	}
	// Only the geography's abuse key signs; a key of a resource or of
	// another geography named by a forger proves nothing.
	if k.Resource != keys.AbuseResource || k.Geo != geo || !k.VerifyMAC(message(kind, geo, fields), raw) {
		return ErrInvalid
	}
	return nil
}
