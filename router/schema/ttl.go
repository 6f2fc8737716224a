package schema

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
)

const (
	// MaxTTLSeconds bounds ttl_seconds, default_ttl_seconds and how far
	// ahead expires_at may be: 100 years.
	MaxTTLSeconds = 100 * 365 * 24 * 3600
	// ttlTolerance is how far apart expires_at and now + ttl_seconds may be
	// when a write gives both: the client computed one from the other, with
	// its own clock and before the request travelled.
	ttlTolerance = 2 * time.Second
)

// resolveExpiry validates expires_at and ttl_seconds of a written context
// and leaves only expires_at, in UTC. Both given must agree within
// ttlTolerance; either must lie in the future, at most MaxTTLSeconds away.
func (m *Metadata) ResolveExpiry(now time.Time) error {
	var exp time.Time
	if m.ExpiresAt != "" {
		t, err := time.Parse(time.RFC3339Nano, m.ExpiresAt)
		if err != nil {
			return apierr.Errorf(apierr.CodeInvalidArgument, "field \"metadata.expires_at\": %q is not an RFC 3339 time", Truncate(m.ExpiresAt))
		}
		exp = t
	}
	if m.TTLSeconds != 0 {
		if m.TTLSeconds < 0 || m.TTLSeconds > MaxTTLSeconds {
			return apierr.Errorf(apierr.CodeInvalidArgument, "field \"metadata.ttl_seconds\": %d is not in 1..%d", m.TTLSeconds, MaxTTLSeconds)
		}
		byTTL := now.Add(time.Duration(m.TTLSeconds) * time.Second)
		if !exp.IsZero() {
			if d := exp.Sub(byTTL); d > ttlTolerance || d < -ttlTolerance {
				return apierr.Errorf(apierr.CodeInvalidArgument, "fields \"metadata.expires_at\" and \"metadata.ttl_seconds\" disagree: %s is not now + %d s (give one, or both within %s)",
					m.ExpiresAt, m.TTLSeconds, ttlTolerance)
			}
		} else {
			exp = byTTL
		}
		m.TTLSeconds = 0
	}
	if exp.IsZero() {
		m.ExpiresAt = ""
		return nil
	}
	if !exp.After(now) {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"metadata.expires_at\": %s is not in the future", m.ExpiresAt)
	}
	if exp.Sub(now) > MaxTTLSeconds*time.Second {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"metadata.expires_at\": %s is more than %d seconds ahead", m.ExpiresAt, MaxTTLSeconds)
	}
	m.ExpiresAt = exp.UTC().Format(time.RFC3339Nano)
	return nil
}

// ApplyTopicTTL gives a context that names no expiry its topic's default.
// topic is the topic's stored JSON.
func ApplyTopicTTL(d *Document, topic []byte, now time.Time) {
	if d.Metadata.ExpiresAt != "" {
		return
	}
	if ttl := TopicDefaultTTL(topic); ttl > 0 {
		d.Metadata.ExpiresAt = now.Add(time.Duration(ttl) * time.Second).UTC().Format(time.RFC3339Nano)
	}
}

// TopicDefaultTTL reads default_ttl_seconds from a topic's stored JSON.
func TopicDefaultTTL(topic []byte) int64 {
	if !bytes.Contains(topic, []byte(`"default_ttl_seconds"`)) {
		return 0 // most topics: no decoding
	}
	var t struct {
		DefaultTTLSeconds int64 `json:"default_ttl_seconds"`
	}
	if json.Unmarshal(topic, &t) != nil {
		return 0
	}
	return t.DefaultTTLSeconds
}
