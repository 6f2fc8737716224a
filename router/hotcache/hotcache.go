package hotcache

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math/bits"
	"sync"
	"time"

	"github.com/allegro/bigcache/v3"
)

// Cache is the router's hot set: rendered API bodies by key, each with
// the version it was rendered from. Tombstones are cached too, so a deleted
// key answers 404 without a shard hop and an older read cannot bring it back.
//
// An entry is only ever replaced by a newer version: put checks and sets
// under a striped lock, so a slow read that fetched an old version cannot
// overwrite the value the router itself has just written.
type Cache struct {
	bc       *bigcache.BigCache // nil when the cache is off
	maxEntry int                // larger values are not cached
	seed     maphash.Seed
	stripes  [256]sync.Mutex // guard check-then-set per key
	onEvict  func()          // counts evictions; may be nil
}

const cacheHeader = 9 // version (8) | flags (1)

// Entry flags. A marker holds no body: it says "version v of this key
// exists, unread here", so Get misses and a read that fetched an older
// version cannot cache it (Invalidate leaves one behind).
const (
	flagTombstone = 1
	flagMarker    = 2
)

// New sizes a cache of about size bytes; below 1 MiB it is off.
func New(size int64, lifeWindow time.Duration, onEvict func()) (*Cache, error) {
	c := &Cache{seed: maphash.MakeSeed(), onEvict: onEvict}
	mb := int(size >> 20)
	if mb < 1 {
		return c, nil
	}
	// bigcache splits the budget over shards (a power of two) and evicts a
	// whole shard's oldest entries to fit a new one; an entry larger than a
	// shard would empty it and still fail, so entries are capped at 1/8 of a
	// shard.
	shards := 1 << min(8, bits.Len(uint(mb))-1)
	shardBytes := (mb << 20) / shards
	c.maxEntry = shardBytes / 8
	cfg := bigcache.Config{
		Shards:             shards,
		LifeWindow:         lifeWindow,
		CleanWindow:        lifeWindow / 2,
		MaxEntriesInWindow: shards * 64, // only sizes the first allocation
		MaxEntrySize:       1024,
		HardMaxCacheSize:   mb,
		Verbose:            false,
	}
	if onEvict != nil {
		cfg.OnRemoveWithReason = func(_ string, _ []byte, reason bigcache.RemoveReason) {
			if reason == bigcache.NoSpace {
				onEvict()
			}
		}
	}
	bc, err := bigcache.New(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("hot cache: %w", err)
	}
	c.bc = bc
	return c, nil
}

// Get returns the cached version, tombstone flag and body for key.
func (c *Cache) Get(key string) (version uint64, tombstone bool, body []byte, ok bool) {
	e, ok := c.lookup(key)
	if !ok || e[8] == flagMarker {
		return 0, false, nil, false
	}
	return binary.BigEndian.Uint64(e), e[8] == flagTombstone, e[cacheHeader:], true
}

// lookup returns key's raw entry, a marker included.
func (c *Cache) lookup(key string) ([]byte, bool) {
	if c.bc == nil {
		return nil, false
	}
	e, err := c.bc.Get(key)
	if err != nil || len(e) < cacheHeader {
		return nil, false
	}
	return e, true
}

// held is the version cached for key, a marker's included.
func (c *Cache) held(key string) (uint64, bool) {
	e, ok := c.lookup(key)
	if !ok {
		return 0, false
	}
	return binary.BigEndian.Uint64(e), true
}

// put stores body for key at version unless a newer version is cached.
func (c *Cache) Put(key string, version uint64, tombstone bool, body []byte) {
	if c.bc == nil || cacheHeader+len(key)+len(body) > c.maxEntry {
		if c.bc != nil {
			// Too large to cache: make sure no older copy stays behind.
			c.Drop(key, version)
		}
		return
	}
	mu := &c.stripes[maphash.String(c.seed, key)%uint64(len(c.stripes))]
	mu.Lock()
	defer mu.Unlock()
	// A marker of this very version is filled in; anything else cached
	// at it or newer stays.
	if e, ok := c.lookup(key); ok {
		if v := binary.BigEndian.Uint64(e); v > version || (v == version && e[8] != flagMarker) {
			return
		}
	}
	e := make([]byte, cacheHeader+len(body))
	binary.BigEndian.PutUint64(e, version)
	if tombstone {
		e[8] = flagTombstone
	}
	copy(e[cacheHeader:], body)
	c.bc.Set(key, e) // an error means no room even after eviction: not cached
}

// drop removes key if the cached version is older than version.
func (c *Cache) Drop(key string, version uint64) {
	if c.bc == nil {
		return
	}
	mu := &c.stripes[maphash.String(c.seed, key)%uint64(len(c.stripes))]
	mu.Lock()
	defer mu.Unlock()
	if v, ok := c.held(key); ok && v < version {
		c.bc.Delete(key)
	}
}

// Invalidate records that key changed to version elsewhere: an older
// cached entry is replaced by a marker of version, so Get misses and a
// slower read that fetched an older version cannot cache it afterwards.
// An entry at version or newer stays.
func (c *Cache) Invalidate(key string, version uint64) {
	if c.bc == nil {
		return
	}
	mu := &c.stripes[maphash.String(c.seed, key)%uint64(len(c.stripes))]
	mu.Lock()
	defer mu.Unlock()
	if v, ok := c.held(key); ok && v >= version {
		return
	}
	var e [cacheHeader]byte
	binary.BigEndian.PutUint64(e[:], version)
	e[8] = flagMarker
	if c.bc.Set(key, e[:]) != nil {
		c.bc.Delete(key) // no room for the marker: at least the old entry goes
	}
}

// stats reports entries and bytes held.
func (c *Cache) Stats() (entries int, bytes int) {
	if c.bc == nil {
		return 0, 0
	}
	return c.bc.Len(), c.bc.Capacity()
}

// Close releases the cache.
func (c *Cache) Close() {
	if c.bc != nil {
		c.bc.Close()
	}
}

// Reset drops every entry: reads go to the shards until they fill the
// cache again.
func (c *Cache) Reset() {
	if c.bc != nil {
		c.bc.Reset()
	}
}
