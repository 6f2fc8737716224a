// Package vindex owns the approximate nearest neighbour indexes a shard
// keeps beside its BoltDB file: one HNSW graph per (key prefix, embedding
// model, dimension), so a vector search walks a few thousand vectors
// instead of scanning all of them.
//
// # Basics
//
// An Index maps record keys to unit vectors of one dimension and answers
// "the k most similar to this one" by cosine similarity. Every entry
// carries its record's version: Add (insert or replace), Delete (a
// tombstone) and Remove (the key left the shard) ignore a write older than
// the one the index holds, as the store ignores an older record. A
// replaced or deleted vector is never returned by a later search: its slot
// stays in the graph as a waypoint, kept out of every answer, until the
// index rebuilds its graph in the background (when deleted slots pass a
// share of all, or on Rebuild).
//
// Search takes k, ef (the candidate list: recall against cost) and an
// optional filter on keys. The filter is applied inside the walk, so it
// never loses answers: the walk goes on through rejected vectors until it
// holds ef admitted ones. When a filter admits so few that the walk would
// cost more than a scan, the Result says Exact and the caller answers by
// its exact scan (storage.TopK).
//
// A Registry holds a shard's indexes by Key, routes each vector write to
// the right one (Put, Delete, Remove), reports their Stats (vectors,
// deleted slots, bytes, building) and saves them to, and loads them from,
// a directory of their own: one checksummed file per index.
//
// # Caveats
//
// The package never reads the BoltDB file and never decides what is
// true: the store feeds it applied writes, and after a restart the owner
// reconciles a loaded index with the records before SetReady, since a
// file may be older than the records (a crash after the last save). A
// file that is truncated or fails its checksum is refused (ErrCorrupt) and
// removed; the owner rebuilds that index from its records.
//
// An insert searches the graph with EfConstruction candidates (100 by
// default: 2,013 inserts/s from two goroutines at 768 dimensions and
// 100,000 vectors, 1,194 at 200; hnswlib builds 740-1,212 a second on one
// thread at 200 on the same vectors); searches and other
// Adds go on in parallel with that search, and the write lock is held only
// to link the new node. Memory is about 3.4 KB a vector at 768 dimensions,
// 3,072 bytes of it the float32 values (Stats.Bytes estimates it); the
// file is 3.2 KB a vector and loads in a quarter to a third of a second
// per 100,000. A filter that admits a tenth of the keys makes a search
// walk about twenty times as far.
//
// Distances use vek's AVX2 assembly where the CPU has it (no cgo): 2 to 4
// times the plain Go loop's speed, for builds and searches alike.
//
// Package vindextest makes the clustered vectors that the tests, the
// benchmarks and kvdb-bench's hnswlib anchor share.
package vindex
