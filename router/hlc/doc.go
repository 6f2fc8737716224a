// Package hlc owns the hybrid logical clock that versions every write:
// strictly increasing, close to wall time, and past every version seen.
package hlc
