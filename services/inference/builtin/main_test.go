package builtin

import (
	"sync"
	"testing"
)

// sharedModel trains the default model once per test binary: training
// takes about a second, and several times that under the race detector.
var sharedModel = sync.OnceValues(Load)

func loadModel(tb testing.TB) *Model {
	tb.Helper()
	m, err := sharedModel()
	if err != nil {
		tb.Fatalf("Load: %v", err)
	}
	return m
}

func ptr[T any](v T) *T { return &v }
