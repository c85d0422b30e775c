//go:build race

package layer

// raceEnabled: sync.Pool drops a random share of what it is given under the
// race detector.
const raceEnabled = true
