// Package kwindex owns what keyword search means: the English analysis
// that turns text into terms (bleve's tokenizer and filters, used as a
// library) and the Okapi BM25 score over them. It holds no index: the
// store keeps the postings in its BoltDB file (storage/keyword.go), and
// the router analyses a query with the same Analyze so both sides agree on
// the terms.
//
// # Basics
//
// Analyze splits text on Unicode word boundaries, strips English
// possessives ("Bob's" → "Bob"), lowercases, drops English stop words and
// stems with Porter's algorithm, so "Running", "runs" and "run" meet.
// Score is BM25 with K1 = 1.2 and B = 0.75, and IDF the always-positive
// form log(1 + (N − df + 0.5) / (df + 0.5)), both over statistics the
// caller supplies: for a sharded collection they are the sums over every
// shard, so a term rare in the whole collection ranks as rare everywhere.
//
// # Caveats
//
// A query's terms are counted once each (a repeated word does not weigh
// more). Terms longer than MaxTermLen bytes, or holding a 0 byte, are
// dropped: they are noise, and the store's keys cannot carry them.
package kwindex
