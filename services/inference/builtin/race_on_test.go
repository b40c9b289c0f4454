//go:build race

package builtin

// raceEnabled: the race detector's sync.Pool drops items at random, so
// pooled scratch space is allocated again now and then.
const raceEnabled = true
