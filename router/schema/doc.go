// Package schema owns what the API's records are: topics, contexts and
// messages, how a request body is decoded and checked (unknown fields,
// duplicate keys, limits), the TTL fields, entity tags and cursors, and
// the stored key layout with every bucket name (keys.go). It imports
// nothing of router/ but apierr.
package schema
