//go:build race

package cli

// raceEnabled: the race detector instruments allocations and makes sync.Pool drop what it is
// given, so allocation counts under it say nothing about the front.
const raceEnabled = true
