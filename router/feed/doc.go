// Package feed is the client change feed of a topic: it follows every
// shard's change stream for one subscriber, keeps the changes of that
// topic's contexts, drops the copies the other replicas send (one event
// per key and version, in version order per context), and names where the
// subscriber stands with a resume token covering every shard.
//
// # Tokens
//
// A token is base64url of "shard:logid:seq" entries joined by ";": for
// each shard, the change log generation and the last sequence handed
// over. A token whose position a shard no longer holds (trimmed past its
// retention, or a file replaced) is ErrGone: the client lists the topic
// and resumes from the current heads. A shard missing from a token (added
// since) is followed from its head.
//
// # Caveats
//
// Copies are dropped by key and version. On a resume, each shard is read
// from up to Config.Prefill changes before its position to learn what was
// sent, so a replica copy that arrives after the token is dropped too;
// a replica lagging another by more than that may send a change again
// (same etag). A superseded version that arrives after a newer one of the
// same context is not sent. A subscriber remembers at most maxSeen
// contexts; beyond that it forgets them all, and a late copy of an old
// change may come again.
//
// It does not own the cache's follower (package coherence) nor the HTTP
// framing (package httpapi).
package feed
