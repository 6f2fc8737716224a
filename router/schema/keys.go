package schema

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/storage"
)

// The buckets the router keeps on the shards. Every bucket name is here,
// so a reader sees the whole stored layout in one place.
const (
	// BucketTopics holds each topic's JSON, keyed by the topic's name.
	BucketTopics = "topics"
	// BucketContexts holds each context in the stored value format (see
	// package codec), keyed by ContextKey.
	BucketContexts = "contexts"
	// BucketVectors holds each embedded context's vector in the storage
	// vector format, at the context's version, keyed and placed like the
	// context.
	BucketVectors = "vectors"
	// BucketText holds each context's words for keyword search (its
	// content.text and its messages' contents, IndexText) in the storage
	// text format, at the context's version, keyed and placed like the
	// context: the shards index it (storage keyword.go), since they cannot
	// read the codec's stored format.
	BucketText = "text"
	// BucketEmbedPending marks contexts stored without the embedding the
	// model server could not make; the retry loop scans it.
	BucketEmbedPending = "embed_pending"
	// BucketExpiry is the TTL purge's index: ExpiryKey → nothing, at the
	// context's version.
	BucketExpiry = "expiry"
	// BucketMessages holds a conversation's messages as records of their
	// own, keyed by MessageKey: one conversation is one ordered range,
	// placed with its context (PlacementOf), so one transaction per owner
	// writes an append's messages beside the context's header.
	BucketMessages = "messages"
	// BucketMessageVectors holds the embeddings of messages, keyed by their
	// MessageKey, at their record's version, in the storage vector format:
	// message-level search (scope "messages").
	BucketMessageVectors = "message_vectors"
	// BucketMessageText holds each message's words for keyword search at
	// message scope, keyed by its MessageKey, at its record's version, in
	// the storage text format (its role as tag).
	BucketMessageText = "message_text"
	// BucketDicts holds the trained compression dictionaries.
	BucketDicts = storage.DictBucket
)

// KeySep separates a topic from a context id in a context's key: names and
// ids cannot contain it, so one topic's contexts are one ordered prefix on
// every shard.
const KeySep = "\x00"

// ContextKey is the storage key of a context.
func ContextKey(topic, id string) string { return topic + KeySep + id }

// Placement is the ring key of a context: a topic's contexts spread over
// all shards.
func Placement(topic, id string) string { return topic + "/" + id }

// expiryKeyDigits is the width of the time in an expiry key: unix
// milliseconds up to the year 2286.
const expiryKeyDigits = 13

// SplitContextKey is the inverse of ContextKey.
func SplitContextKey(key []byte) (topic, id string, ok bool) {
	for i, b := range key {
		if b == KeySep[0] {
			return string(key[:i]), string(key[i+1:]), i > 0 && i < len(key)-1
		}
	}
	return "", "", false
}

// PlacementOf returns the ring key of a storage key: contexts (topic, 0,
// id) and their messages (topic, 0, id, 0, seq) are placed by topic/id,
// everything else by its key.
func PlacementOf(key []byte) string {
	if i := bytes.IndexByte(key, KeySep[0]); i >= 0 {
		id := key[i+1:]
		if j := bytes.IndexByte(id, KeySep[0]); j >= 0 {
			id = id[:j] // ids cannot hold the separator: what follows is a message's seq
		}
		return string(key[:i]) + "/" + string(id)
	}
	return string(key)
}

// MessagePrefix is the key prefix of the messages of the context topic/id:
// topic, 0, id, 0. No other context's messages share it (ids cannot hold
// the separator).
func MessagePrefix(topic, id string) []byte {
	k := make([]byte, 0, len(topic)+len(id)+2+8)
	k = append(k, topic...)
	k = append(k, KeySep...)
	k = append(k, id...)
	return append(k, KeySep...)
}

// MessageKey is the storage key of message seq (1 for the first) of the
// context topic/id: its MessagePrefix and seq, 8 bytes big endian, so a
// conversation's messages scan in order.
func MessageKey(topic, id string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(MessagePrefix(topic, id), seq)
}

// MessageSeq is the seq of a message key under prefix (MessagePrefix).
func MessageSeq(prefix, key []byte) (uint64, bool) {
	if len(key) != len(prefix)+8 || !bytes.HasPrefix(key, prefix) {
		return 0, false
	}
	seq := binary.BigEndian.Uint64(key[len(prefix):])
	return seq, seq > 0
}

// ExpiryKey is the index entry of a context key expiring at t.
func ExpiryKey(t time.Time, ctxKey []byte) []byte {
	k := make([]byte, 0, expiryKeyDigits+1+len(ctxKey))
	k = fmt.Appendf(k, "%0*d/", expiryKeyDigits, max(0, t.UnixMilli()))
	return append(k, ctxKey...)
}

// ParseExpiryKey splits an index entry into its context key.
func ParseExpiryKey(k []byte) (ctxKey []byte, ok bool) {
	if len(k) <= expiryKeyDigits+1 || k[expiryKeyDigits] != '/' {
		return nil, false
	}
	if _, err := strconv.ParseUint(string(k[:expiryKeyDigits]), 10, 64); err != nil {
		return nil, false
	}
	return k[expiryKeyDigits+1:], true
}

// ETag renders a record version as the API's entity tag.
func ETag(v uint64) string { return `"` + strconv.FormatUint(v, 16) + `"` }

// ParseETag accepts a strong or weak entity tag, quoted or not.
func ParseETag(s string) (uint64, bool) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	s = strings.Trim(s, `"`)
	v, err := strconv.ParseUint(s, 16, 64)
	return v, err == nil && v != 0
}

// Cursors are opaque to clients: the last name or id of the page, base64.
func EncodeCursor(last string) string { return base64.RawURLEncoding.EncodeToString([]byte(last)) }

// DecodeCursor reads a cursor back; one that does not decode to a valid
// name or id (valid) is invalid_argument.
func DecodeCursor(s string, valid func(string) bool) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || !valid(string(b)) {
		return "", apierr.Errorf(apierr.CodeInvalidArgument, "cursor %q is malformed: pass back a next_cursor unchanged", Truncate(s))
	}
	return string(b), nil
}
