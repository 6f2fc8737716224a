package storage

import "errors"

// Sentinel errors. The Store and the Client return them (wrapped with
// context), so callers test them with errors.Is whichever side they hold.
var (
	// ErrNotFound is returned by Get when the key has never been written.
	// A deleted key is not an error: Get returns its tombstone.
	ErrNotFound = errors.New("not found")

	// ErrInvalid is returned when a request is malformed: an unknown bucket,
	// an empty or oversized key, an oversized value, a bad scan limit.
	ErrInvalid = errors.New("invalid request")

	// ErrClosed is returned by every method of a Store after Close.
	ErrClosed = errors.New("store closed")

	// ErrLocked is returned by Open when another process holds the file.
	ErrLocked = errors.New("database file is locked by another process")

	// ErrUnavailable is returned by the Client when the storage daemon cannot
	// be reached, times out, or answers 503.
	ErrUnavailable = errors.New("shard unavailable")

	// ErrStaleEpoch is returned by Apply when the request was sent under an
	// older cluster-map epoch than the shard holds: the sender must reload
	// the map before it writes again.
	ErrStaleEpoch = errors.New("stale cluster map epoch")

	// ErrInternal is returned by the Client when the daemon answers 500.
	ErrInternal = errors.New("shard internal error")

	// ErrChangesGap is returned (as a *ChangesGapError) by Changes when
	// the changes asked for are not all in the shard's change log: they
	// were trimmed, or the log is another one than the follower followed.
	ErrChangesGap = errors.New("gap in the change log")

	// ErrUnauthenticated is returned by the Client when the daemon refuses
	// the request for want of the right cluster token (see RequireToken).
	ErrUnauthenticated = errors.New("shard refused the cluster token")
)
