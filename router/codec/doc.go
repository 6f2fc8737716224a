// Package codec owns the stored value format of contexts: metadata kept
// clear, the body compressed with zstd (plain or with a trained dictionary
// named by its frame header), embeddings as float32; sealing with the
// keyring (AES-256-GCM) as a shard decorator; and the stored-expiry checks
// reads make without decoding. It never reaches a shard except through
// the Fetch hook that loads a missing dictionary.
package codec
