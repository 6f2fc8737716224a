package codec

import (
	"bytes"
	"time"

	"github.com/go-kvdb/go-kvdb/storage"
)

// What a stored or rendered context that expires begins with: expires_at
// is the first field of its metadata on purpose (see schema.Metadata).
var (
	metaExpiryPrefix     = []byte(`{"expires_at":"`)
	renderedExpiryPrefix = []byte(`{"metadata":{"expires_at":"`)
)

// metaExpiry returns the expiry of a metadata JSON object that begins with
// it (as the router writes them); ok is false when it has none.
func metaExpiry(meta []byte) (t time.Time, ok bool) {
	if !bytes.HasPrefix(meta, metaExpiryPrefix) {
		return time.Time{}, false
	}
	rest := meta[len(metaExpiryPrefix):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(rest[:end]))
	return t, err == nil
}

// RenderedExpired reports whether a rendered context (the cache's form,
// {"metadata":{…},…}) has expired. It is on the path of every cache hit:
// a context without an expiry costs one prefix comparison, not even a
// reading of the clock.
func RenderedExpired(body []byte) bool {
	if !bytes.HasPrefix(body, renderedExpiryPrefix) {
		return false
	}
	t, ok := metaExpiry(body[len(`{"metadata":`):])
	return ok && !time.Now().Before(t)
}

// StoredExpired reports whether a stored context value has expired at now.
// A value that cannot be split is not expired: reads report it as corrupt.
func StoredExpired(value []byte, now time.Time) bool {
	meta, _, err := storedMeta(value)
	if err != nil {
		return false
	}
	t, ok := metaExpiry(meta)
	return ok && !now.Before(t)
}

// LiveRecord reports whether a context record read from the shards is
// live: written, not deleted, not expired.
func LiveRecord(rec storage.Record, now time.Time) bool {
	return rec.Version != 0 && !rec.Tombstone && !StoredExpired(rec.Value, now)
}

// KeepUnexpired wraps a list filter so that expired contexts are skipped.
func KeepUnexpired(keep func(storage.Record) bool) func(storage.Record) bool {
	now := time.Now()
	return func(rec storage.Record) bool {
		if StoredExpired(rec.Value, now) {
			return false
		}
		return keep == nil || keep(rec)
	}
}
