package vindex

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Key names one index of a registry: the vectors under one key prefix (a
// topic's) of one embedding model and dimension. Searches compare only
// vectors of equal model and dimension, so each pair has its own graph.
type Key struct {
	Prefix string
	Model  string
	Dim    int
}

func (k Key) String() string { return fmt.Sprintf("%q/%q/%d", k.Prefix, k.Model, k.Dim) }

// Registry holds a shard's indexes, one per Key, and routes a record's
// writes to them: Put adds a vector to its (prefix, model, dimension)
// index and deletes the key from the prefix's others (a rewrite may change
// the model), Delete deletes it from all of the prefix's.
//
// Feed it in commit order per key (the store's commit path does): the
// version guard of each Index orders writes within one index, but a
// late older write under another model would be taken.
type Registry struct {
	tmpl Config // every index's Config but its Dim

	mu       sync.RWMutex // guards byKey, byPrefix, closed
	byKey    map[Key]*Index
	byPrefix map[string][]Key
	closed   bool
}

// NewRegistry returns an empty registry whose indexes are made with tmpl
// (its Dim is ignored: each Key says its own).
func NewRegistry(tmpl Config) (*Registry, error) {
	tmpl.Dim = 1
	if _, err := tmpl.withDefaults(); err != nil {
		return nil, err
	}
	return &Registry{tmpl: tmpl, byKey: make(map[Key]*Index), byPrefix: make(map[string][]Key)}, nil
}

// Get returns the index of k, or nil when there is none.
func (r *Registry) Get(k Key) *Index {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byKey[k]
}

// Ensure returns the index of k, creating it empty (and ready) when there
// is none.
func (r *Registry) Ensure(k Key) (*Index, error) {
	if x := r.Get(k); x != nil {
		return x, nil
	}
	cfg := r.tmpl
	cfg.Dim = k.Dim
	cfg.Seed = r.tmpl.Seed ^ keySeed(k)
	x, err := New(cfg)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", k, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	if have := r.byKey[k]; have != nil {
		return have, nil
	}
	r.putLocked(k, x)
	return x, nil
}

func (r *Registry) putLocked(k Key, x *Index) {
	if old := r.byKey[k]; old != nil {
		old.Close()
	} else {
		r.byPrefix[k.Prefix] = append(r.byPrefix[k.Prefix], k)
	}
	r.byKey[k] = x
}

// Set puts x in as the index of k (closing one it replaces): for an index
// loaded or rebuilt by the owner.
func (r *Registry) Set(k Key, x *Index) error {
	if x.Dim() != k.Dim {
		return fmt.Errorf("index of %d dimensions as %s: %w", x.Dim(), k, ErrInvalid)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	r.putLocked(k, x)
	return nil
}

// Drop closes and removes the index of k; it reports whether there was one.
func (r *Registry) Drop(k Key) bool {
	r.mu.Lock()
	x := r.byKey[k]
	if x != nil {
		delete(r.byKey, k)
		ks := slices.DeleteFunc(r.byPrefix[k.Prefix], func(o Key) bool { return o == k })
		if len(ks) == 0 {
			delete(r.byPrefix, k.Prefix)
		} else {
			r.byPrefix[k.Prefix] = ks
		}
	}
	r.mu.Unlock()
	if x != nil {
		x.Close()
	}
	return x != nil
}

// indexes returns the indexes of prefix but except's.
func (r *Registry) indexes(prefix string, except Key) []*Index {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*Index
	for _, o := range r.byPrefix[prefix] {
		if o != except {
			out = append(out, r.byKey[o])
		}
	}
	return out
}

// Put applies a vector write: key (a record key under prefix) holds vec of
// model at version. It creates the index it needs.
func (r *Registry) Put(prefix, model, key string, version uint64, vec []float32) error {
	k := Key{Prefix: prefix, Model: model, Dim: len(vec)}
	if err := checkVector(vec); err != nil { // before Ensure: bad input makes no index
		return err
	}
	x, err := r.Ensure(k)
	if err != nil {
		return err
	}
	for _, o := range r.indexes(prefix, k) {
		if _, _, known := o.Version(key); known {
			if _, err := o.Delete(key, version); err != nil {
				return err
			}
		}
	}
	if _, err := x.Add(key, version, vec); err != nil {
		return fmt.Errorf("index %s: %w", k, err)
	}
	return nil
}

// Delete applies a tombstone (or an expiry) of key under prefix at version
// to every index of the prefix that knows the key.
func (r *Registry) Delete(prefix, key string, version uint64) error {
	for _, o := range r.indexes(prefix, Key{}) {
		if _, _, known := o.Version(key); known {
			if _, err := o.Delete(key, version); err != nil {
				return err
			}
		}
	}
	return nil
}

// Remove forgets key under prefix in every index, whatever its version
// (the key left the shard).
func (r *Registry) Remove(prefix, key string) error {
	for _, o := range r.indexes(prefix, Key{}) {
		if _, err := o.Remove(key); err != nil {
			return err
		}
	}
	return nil
}

// KeyStats is one index's Stats under its Key.
type KeyStats struct {
	Key Key
	Stats
}

// Stats returns every index's stats, ordered by key.
func (r *Registry) Stats() []KeyStats {
	r.mu.RLock()
	idx := make(map[Key]*Index, len(r.byKey))
	for k, x := range r.byKey {
		idx[k] = x
	}
	r.mu.RUnlock()
	out := make([]KeyStats, 0, len(idx))
	for k, x := range idx {
		out = append(out, KeyStats{Key: k, Stats: x.Stats()})
	}
	slices.SortFunc(out, func(a, b KeyStats) int { return compareKeys(a.Key, b.Key) })
	return out
}

func compareKeys(a, b Key) int {
	if c := strings.Compare(a.Prefix, b.Prefix); c != 0 {
		return c
	}
	if c := strings.Compare(a.Model, b.Model); c != 0 {
		return c
	}
	return a.Dim - b.Dim
}

// Files: one per index in a directory of their own (beside the BoltDB
// file), named by a hash of the key, with the key in the file's label.
const fileExt = ".vidx"

func fileName(k Key) string {
	h := sha256.Sum256(encodeKey(k))
	return hex.EncodeToString(h[:12]) + fileExt
}

func keySeed(k Key) uint64 {
	h := sha256.Sum256(encodeKey(k))
	return binary.LittleEndian.Uint64(h[:])
}

func encodeKey(k Key) []byte {
	b := binary.AppendUvarint(nil, uint64(len(k.Prefix)))
	b = append(b, k.Prefix...)
	b = binary.AppendUvarint(b, uint64(len(k.Model)))
	b = append(b, k.Model...)
	return binary.AppendUvarint(b, uint64(k.Dim))
}

func decodeKey(b []byte) (Key, error) {
	var k Key
	bad := fmt.Errorf("index file label: %w", ErrCorrupt)
	n, i := binary.Uvarint(b)
	if i <= 0 || n > uint64(len(b)-i) {
		return k, bad
	}
	k.Prefix, b = string(b[i:i+int(n)]), b[i+int(n):]
	n, i = binary.Uvarint(b)
	if i <= 0 || n > uint64(len(b)-i) {
		return k, bad
	}
	k.Model, b = string(b[i:i+int(n)]), b[i+int(n):]
	d, i := binary.Uvarint(b)
	if i <= 0 || i != len(b) || d == 0 || d > 1<<16 {
		return k, bad
	}
	k.Dim = int(d)
	return k, nil
}

// SaveDir writes every index to dir (created if missing), each with
// watermark, and removes files of indexes the registry no longer holds.
func (r *Registry) SaveDir(dir string, watermark uint64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create vector index directory: %w", err)
	}
	r.mu.RLock()
	idx := make(map[Key]*Index, len(r.byKey))
	for k, x := range r.byKey {
		idx[k] = x
	}
	r.mu.RUnlock()
	keep := make(map[string]bool, len(idx))
	for k, x := range idx {
		name := fileName(k)
		keep[name] = true
		if err := x.WriteFile(filepath.Join(dir, name), Meta{Watermark: watermark, Label: encodeKey(k)}); err != nil {
			if errors.Is(err, ErrClosed) { // dropped meanwhile
				continue
			}
			return fmt.Errorf("index %s: %w", k, err)
		}
	}
	names, err := filepath.Glob(filepath.Join(dir, "*"+fileExt))
	if err != nil {
		return fmt.Errorf("list vector index directory: %w", err)
	}
	for _, p := range names {
		if !keep[filepath.Base(p)] {
			os.Remove(p)
		}
	}
	return nil
}

// Loaded is one file LoadDir read: the index (not ready: reconcile it,
// then SetReady) and its watermark, or why it was refused.
type Loaded struct {
	Key       Key
	Path      string
	Index     *Index // nil when refused
	Watermark uint64
	Err       error // ErrCorrupt (wrapped) for a damaged file
}

// LoadDir loads every index file in dir into the registry, replacing
// indexes of the same keys, and returns what it found. A refused file is
// removed, so the owner rebuilds that index from its records; a missing
// directory is an empty one.
func (r *Registry) LoadDir(dir string) ([]Loaded, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*"+fileExt))
	if err != nil {
		return nil, fmt.Errorf("list vector index directory: %w", err)
	}
	slices.Sort(names)
	var out []Loaded
	for _, p := range names {
		l := Loaded{Path: p}
		x, meta, err := ReadFile(p)
		if err == nil {
			l.Key, err = decodeKey(meta.Label)
			if err == nil && (l.Key.Dim != x.Dim() || filepath.Base(p) != fileName(l.Key)) {
				err = fmt.Errorf("index file %s does not hold %s: %w", p, l.Key, ErrCorrupt)
			}
			if err == nil {
				err = r.Set(l.Key, x)
			}
			if err != nil {
				x.Close()
			}
		}
		if err != nil {
			l.Err = err
			os.Remove(p)
		} else {
			l.Index, l.Watermark = x, meta.Watermark
		}
		out = append(out, l)
	}
	return out, nil
}

// Close closes every index; the registry then refuses new ones.
func (r *Registry) Close() error {
	r.mu.Lock()
	idx := r.byKey
	r.byKey, r.byPrefix, r.closed = map[Key]*Index{}, map[string][]Key{}, true
	r.mu.Unlock()
	for _, x := range idx {
		x.Close()
	}
	return nil
}

// Keys returns the keys of every index, ordered.
func (r *Registry) Keys() []Key {
	r.mu.RLock()
	out := make([]Key, 0, len(r.byKey))
	for k := range r.byKey {
		out = append(out, k)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, compareKeys)
	return out
}

// PrefixKeys returns the keys of prefix's indexes (one per model and
// dimension).
func (r *Registry) PrefixKeys(prefix string) []Key {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.byPrefix[prefix])
}
