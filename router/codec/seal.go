package codec

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// Encryption at rest. With a Keyring every value leaves the router sealed
// with AES-256-GCM, after the codec compressed it (ciphertext does not
// compress): topics, contexts with their messages, vectors, pending marks.
// Only the cluster map stays clear, so that routers with different key
// files still agree on the Shape of the cluster. Keys (topic names and
// context ids) stay clear too: the shards must order and scan them.
//
// A sealed value is
//
//	magic 0xE5 | version 1 | key id (4) | nonce (12) | ciphertext | GCM tag (16)
//
// The key id is the first 4 bytes of SHA-256 of the key, so a record names
// the key that opens it without revealing it; rotation adds a key, old
// records stay readable and POST /api/v1/admin/reencrypt rewrites them
// under the newest. The additional data is the bucket and the record's
// key, so a sealed value moved to another key does not open. Nonces are
// random: keep well below 2^32 writes per key (rotate).
//
// No plaintext the router stores begins with 0xE5 (topics are JSON,
// contexts and vectors start with their format byte 1, marks are empty),
// so a value is known sealed by its first bytes. That lets records copied
// between shards by repair and rebalance travel sealed, untouched, and
// lets a router that gains a key file read what was stored before it.
const (
	SealMagic    = 0xE5 // the first byte of every sealed value
	sealVersion  = 1
	keyIDLen     = 4
	sealOverhead = 2 + keyIDLen + 12 + 16
)

// Keyring holds the keys that seal values: the first seals new writes,
// all of them open.
type Keyring struct {
	current *sealKey
	byID    map[[keyIDLen]byte]*sealKey
}

type sealKey struct {
	id   [keyIDLen]byte
	aead cipher.AEAD
}

// LoadKeyFile reads an encryption key file: one key per line, 64 hex
// digits (256 bits); the first is used for new writes. Blank lines and
// lines starting with # are skipped.
func LoadKeyFile(file string) (*Keyring, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("encryption key file: %w", err)
	}
	kr, err := ParseKeys(raw)
	if err != nil {
		return nil, fmt.Errorf("encryption key file %s: %w", file, err)
	}
	return kr, nil
}

// ParseKeys reads keys in the key file's format.
func ParseKeys(text []byte) (*Keyring, error) {
	kr := &Keyring{byID: map[[keyIDLen]byte]*sealKey{}}
	sc := bufio.NewScanner(bytes.NewReader(text))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		key, err := hex.DecodeString(s)
		if err != nil || len(key) != 32 {
			return nil, fmt.Errorf("line %d: want 64 hex digits (a 256-bit key)", line)
		}
		k, err := newSealKey(key)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if _, dup := kr.byID[k.id]; dup {
			return nil, fmt.Errorf("line %d: key %x is listed twice", line, k.id)
		}
		kr.byID[k.id] = k
		if kr.current == nil {
			kr.current = k
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if kr.current == nil {
		return nil, fmt.Errorf("no key: want one line of 64 hex digits")
	}
	return kr, nil
}

func newSealKey(key []byte) (*sealKey, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	k := &sealKey{aead: aead}
	sum := sha256.Sum256(key)
	copy(k.id[:], sum[:keyIDLen])
	return k, nil
}

// CurrentID names the key new writes are sealed with (hex).
func (kr *Keyring) CurrentID() string { return hex.EncodeToString(kr.current.id[:]) }

// Len is how many keys the Ring holds.
func (kr *Keyring) Len() int { return len(kr.byID) }

func aad(bucket string, key []byte) []byte {
	a := make([]byte, 0, len(bucket)+1+len(key))
	a = append(a, bucket...)
	a = append(a, 0)
	return append(a, key...)
}

// seal encrypts plain for key in bucket under the current key.
func (kr *Keyring) Seal(bucket string, key, plain []byte) []byte {
	k := kr.current
	out := make([]byte, 2+keyIDLen+12, sealOverhead+len(plain))
	out[0], out[1] = SealMagic, sealVersion
	copy(out[2:], k.id[:])
	nonce := out[2+keyIDLen:]
	rand.Read(nonce) // never fails (crypto/rand)
	return k.aead.Seal(out, nonce, plain, aad(bucket, key))
}

// IsSealed reports whether v is a sealed value.
func IsSealed(v []byte) bool {
	return len(v) >= sealOverhead && v[0] == SealMagic && v[1] == sealVersion
}

func sealedKeyID(v []byte) (id [keyIDLen]byte) {
	copy(id[:], v[2:])
	return id
}

// open returns the plaintext of a value read from bucket at key: a sealed
// value is opened, anything else (stored before encryption was turned on)
// is returned as it is. A value sealed with a key kr does not hold, and one
// that fails authentication, are errors that say so, never garbage.
func (kr *Keyring) Open(bucket string, key, v []byte) ([]byte, error) {
	if !IsSealed(v) {
		return v, nil
	}
	id := sealedKeyID(v)
	if kr == nil {
		return nil, &apierr.Error{Code: apierr.CodeInternal, Message: fmt.Sprintf(
			"record %s/%s is encrypted with key %x, but this router has no -encryption-key-file", bucket, printableKey(key), id)}
	}
	k, ok := kr.byID[id]
	if !ok {
		return nil, &apierr.Error{Code: apierr.CodeInternal, Message: fmt.Sprintf(
			"record %s/%s is encrypted with key %x, which is missing from -encryption-key-file", bucket, printableKey(key), id)}
	}
	nonce := v[2+keyIDLen : 2+keyIDLen+12]
	plain, err := k.aead.Open(nil, nonce, v[2+keyIDLen+12:], aad(bucket, key))
	if err != nil {
		return nil, &apierr.Error{Code: apierr.CodeInternal, Message: fmt.Sprintf(
			"record %s/%s fails authentication under key %x: it was tampered with or is corrupt", bucket, printableKey(key), id), Err: err}
	}
	return plain, nil
}

// printableKey renders a storage key for a message: topic/id.
func printableKey(k []byte) string { return schema.PrintableKey(k) }

// SealedWithCurrent reports whether v is sealed with the keyring's current
// key (a re-encryption pass leaves it alone).
func (kr *Keyring) SealedWithCurrent(v []byte) bool {
	return IsSealed(v) && sealedKeyID(v) == kr.current.id
}

// sealed seals values on their way to a shard and opens them on the
// way back, so the rest of the router handles plaintext only. It wraps
// every shard, keyring or not: without one it still refuses to hand out a
// sealed value as if it were plaintext.
type sealed struct {
	placement.Shard
	kr *Keyring // nil: nothing is sealed
}

// Seal wraps sh so that values are sealed with kr on their way in and
// opened on their way out; kr nil seals nothing.
func Seal(sh placement.Shard, kr *Keyring) placement.Shard {
	return &sealed{Shard: sh, kr: kr}
}

// clear reports buckets that are never sealed.
func clearBucket(bucket string) bool { return bucket == storage.ClusterBucket }

func (s *sealed) Get(ctx context.Context, bucket string, key []byte) (storage.Record, error) {
	rec, err := s.Shard.Get(ctx, bucket, key)
	if err != nil || rec.Tombstone || clearBucket(bucket) {
		return rec, err
	}
	if rec.Value, err = s.kr.Open(bucket, key, rec.Value); err != nil {
		return storage.Record{}, err
	}
	return rec, nil
}

// MultiGetOpen is MultiGet with every value opened, as Get opens it (the
// shard's MultiGet hands records out as held, sealed: repair copies them
// so). Searches read their matches with it.
func (s *sealed) MultiGetOpen(ctx context.Context, bucket string, keys [][]byte) ([]storage.Record, error) {
	recs, err := s.Shard.MultiGet(ctx, bucket, keys)
	if err != nil || clearBucket(bucket) {
		return recs, err
	}
	for i := range recs {
		if recs[i].Tombstone || recs[i].Version == 0 {
			continue
		}
		if recs[i].Value, err = s.kr.Open(bucket, recs[i].Key, recs[i].Value); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// Apply seals the writes' values. A value that is sealed already (a record
// copied from another shard by repair or rebalance) goes as it is.
func (s *sealed) Apply(ctx context.Context, bucket string, writes []storage.Write) ([]storage.Result, error) {
	if s.kr == nil || clearBucket(bucket) {
		return s.Shard.Apply(ctx, bucket, writes)
	}
	sealed := writes
	for i := range writes {
		w := &writes[i]
		if w.Tombstone || len(w.Value) == 0 || IsSealed(w.Value) {
			continue
		}
		if &sealed[0] == &writes[0] {
			// Callers share their writes between replicas: never seal in place.
			sealed = append([]storage.Write(nil), writes...)
		}
		sealed[i].Value = s.kr.Seal(bucket, w.Key, w.Value)
	}
	return s.Shard.Apply(ctx, bucket, sealed)
}

// Txn seals the writes' values as Apply does, each with its own bucket.
func (s *sealed) Txn(ctx context.Context, writes []storage.TxnWrite) ([]storage.Result, error) {
	if s.kr == nil {
		return s.Shard.Txn(ctx, writes)
	}
	sealed := writes
	for i := range writes {
		w := &writes[i]
		if w.Tombstone || len(w.Value) == 0 || IsSealed(w.Value) || clearBucket(w.Bucket) {
			continue
		}
		if &sealed[0] == &writes[0] {
			sealed = append([]storage.TxnWrite(nil), writes...) // never seal in place
		}
		sealed[i].Value = s.kr.Seal(w.Bucket, w.Key, w.Value)
	}
	return s.Shard.Txn(ctx, sealed)
}

func (s *sealed) Scan(ctx context.Context, bucket string, o storage.ScanOptions) (storage.ScanPage, error) {
	if s.kr != nil && !clearBucket(bucket) {
		o.ValueLimit = 0 // a sealed value opens only whole
	}
	p, err := s.Shard.Scan(ctx, bucket, o)
	if err != nil || o.KeysOnly || clearBucket(bucket) {
		return p, err
	}
	for i := range p.Records {
		rec := &p.Records[i]
		if rec.Tombstone {
			continue
		}
		if rec.Value, err = s.kr.Open(bucket, rec.Key, rec.Value); err != nil {
			return storage.ScanPage{}, err
		}
	}
	return p, nil
}

// TopK ranks a topic's vectors. Without a keyring the shard does it (its
// vectors are plaintext). With one the shard cannot read them, so the
// router scans the prefix, opens each vector and ranks it here: every
// vector of the topic crosses the network on every search (about 4 bytes
// a dimension, plus the seal's 34), instead of k matches. That is the
// price of a shard that never sees an embedding; see the README.
func (s *sealed) TopK(ctx context.Context, bucket string, q storage.TopKQuery) (storage.TopKResult, error) {
	if s.kr == nil {
		vs, ok := s.Shard.(placement.Searcher)
		if !ok {
			return storage.TopKResult{}, placement.ErrNoTopK
		}
		return vs.TopK(ctx, bucket, q)
	}
	rk, err := storage.NewRanker(q)
	if err != nil {
		return storage.TopKResult{}, err
	}
	err = placement.Walk(ctx, s, bucket, storage.ScanOptions{Prefix: q.Prefix, Limit: 1000}, 0, func(recs []storage.Record) error {
		for _, rec := range recs {
			if err := rk.Add(rec.Key, rec.Version, rec.Value); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return storage.TopKResult{}, err
	}
	res := rk.Result()
	res.Exact = true // ranked here, by a scan of every vector
	return res, nil
}

// KeywordStats and Keyword search words. Without a keyring the shard
// does it from its index. With one the shard holds the words sealed and
// has indexed nothing, so the router scans the topic's text records,
// opens each and counts (then scores) it here, as a shard would: every
// context's words cross the network twice a search.
func (s *sealed) KeywordStats(ctx context.Context, bucket string, prefix []byte, terms []string) (storage.KeywordStats, error) {
	if s.kr == nil {
		ks, ok := s.Shard.(placement.KeywordSearcher)
		if !ok {
			return storage.KeywordStats{}, placement.ErrNoKeyword
		}
		return ks.KeywordStats(ctx, bucket, prefix, terms)
	}
	st := storage.KeywordStats{DF: make([]int64, len(terms))}
	err := placement.Walk(ctx, s, bucket, storage.ScanOptions{Prefix: prefix, Limit: 1000}, 0, func(recs []storage.Record) error {
		for _, rec := range recs {
			storage.AddTextStats(&st, terms, rec.Value)
		}
		return nil
	})
	return st, err
}

func (s *sealed) Keyword(ctx context.Context, bucket string, q storage.KeywordQuery) (storage.TopKResult, error) {
	if s.kr == nil {
		ks, ok := s.Shard.(placement.KeywordSearcher)
		if !ok {
			return storage.TopKResult{}, placement.ErrNoKeyword
		}
		return ks.Keyword(ctx, bucket, q)
	}
	var res storage.TopKResult
	err := placement.Walk(ctx, s, bucket, storage.ScanOptions{Prefix: q.Prefix, Limit: 1000}, 0, func(recs []storage.Record) error {
		for _, rec := range recs {
			if score, ok := storage.ScoreText(&q, rec.Value); ok {
				res.Matches = append(res.Matches, storage.Match{Key: rec.Key, Version: rec.Version, Score: score})
			}
		}
		return nil
	})
	if err != nil {
		return storage.TopKResult{}, err
	}
	res.Scanned, res.Exact = len(res.Matches), true
	storage.SortMatches(res.Matches)
	res.Matches = res.Matches[:min(len(res.Matches), q.K)]
	return res, nil
}

// Unwrap is the shard below (see placement.As).
func (s *sealed) Unwrap() placement.Shard { return s.Shard }
