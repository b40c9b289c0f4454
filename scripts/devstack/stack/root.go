// Package stack starts and stops the pieces of the Terroir dev stack: the
// embedded Kafka-protocol broker, Redis, the service processes, and the
// plumbing that prefixes and serialises their output.
package stack

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// FindRoot walks up from dir to the first folder that holds a go.work file
// and returns that folder as an absolute path.
func FindRoot(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", dir, err)
	}
	for d := abs; ; {
		_, err := os.Stat(filepath.Join(d, "go.work"))
		if err == nil {
			return d, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("looking for go.work in %s: %w", d, err)
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.work found in %s or any parent folder", abs)
		}
		d = parent
	}
}
