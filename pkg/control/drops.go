package control

import (
	"errors"
	"fmt"
	"strings"
)

// BatchDrops says whether a resource's batch drop location is watched and
// where it is: a folder (in the dev stack, a directory under
// TERROIR_BATCH_DROPS_DIR; in production, a prefix of the home
// geography's bucket) holding inbox/, outbox/ and processed/. JSONL files
// written into inbox/ become batches of the resource.
type BatchDrops struct {
	Enabled bool `json:"enabled"`
	// Location is the folder inside the home geography's drop store, a
	// clean relative path ending in '/' (see CleanDropLocation). No two
	// resources' locations overlap.
	Location string `json:"location"`
}

// DefaultDropLocation is the drop location of a resource that names none:
// a folder named after it.
func DefaultDropLocation(resource string) string { return resource + "/" }

// Drops returns the resource's drop settings in effect: those it was
// given, or, for a resource created before drops existed, drops enabled
// at DefaultDropLocation.
func (r Resource) Drops() BatchDrops {
	if r.BatchDrops == nil {
		return BatchDrops{Enabled: true, Location: DefaultDropLocation(r.Name)}
	}
	return *r.BatchDrops
}

// dropFolders are the folders inside every drop location; a location may
// not use their names, so no location can be read as another's folder.
var dropFolders = []string{"inbox", "outbox", "processed"}

// ErrInvalidDropLocation is returned by CleanDropLocation.
var ErrInvalidDropLocation = errors.New("invalid drop location")

// CleanDropLocation returns loc as a location ("a/b/"): a relative path
// of segments of letters, digits, '-', '_' and '.', none of them "." or
// "..", nor inbox, outbox or processed, with one optional trailing '/'.
// Anything else (absolute paths, empty segments, backslashes, control
// characters) is ErrInvalidDropLocation, so a location can never reach
// outside the drop store.
func CleanDropLocation(loc string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%q: %s: %w", loc, why, ErrInvalidDropLocation)
	}
	trimmed := strings.TrimSuffix(loc, "/")
	switch {
	case trimmed == "":
		return bad("empty")
	case len(trimmed) > 200:
		return bad("longer than 200 characters")
	}
	for seg := range strings.SplitSeq(trimmed, "/") {
		switch {
		case seg == "":
			return bad("a leading or double '/'")
		case seg == "." || seg == "..":
			return bad("a '.' or '..' segment")
		case strings.ContainsFunc(seg, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
		}):
			return bad("a character other than letters, digits, '-', '_', '.' and '/'")
		}
		for _, f := range dropFolders {
			if strings.EqualFold(seg, f) {
				return bad("a segment named " + f)
			}
		}
	}
	return trimmed + "/", nil
}

// DropLocationsOverlap reports whether one of two clean locations is the
// other or inside it, compared without case (one directory, on a file
// system that ignores case).
func DropLocationsOverlap(a, b string) bool {
	a, b = strings.ToLower(a), strings.ToLower(b)
	return strings.HasPrefix(a, b) || strings.HasPrefix(b, a)
}
