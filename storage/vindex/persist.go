package vindex

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
)

// An index file is
//
//	header   = magic "KVDBVIX1" | format u32 | dim u32 | m u32 | efc u32
//	         | slots u32 | tombstones u32 | entry u32 | max level i32
//	         | watermark u64 | seed u64 | rebuild share float64     (64 bytes)
//	label    = uvarint len | bytes                  (the owner's, e.g. the registry key)
//	slots    = slots × (level u8 | deleted u8 | version u64 | uvarint len key | key
//	                    | level × (m+1) u32 upper-layer lists)
//	vectors  = slots × dim float32                  (unit length)
//	layer 0  = slots × (2m+1) u32                   (count, then neighbours)
//	tombs    = tombstones × (version u64 | uvarint len key | key)
//	trailer  = crc32c of all before u32 | magic "KVDBVIXE"
//
// all little endian. The trailer's checksum covers the whole file, so a
// truncated, torn or bit-flipped file is refused as ErrCorrupt and the
// owner rebuilds from its records. A file does not say which records it
// reflects beyond the watermark its writer gave: a loaded index starts not
// ready, and its owner reconciles it with the records (Version, Keys)
// before SetReady.
const (
	fileMagic   = "KVDBVIX1"
	endMagic    = "KVDBVIXE"
	fileFormat  = 1
	headerSize  = 64
	maxLabelLen = 1 << 16
	maxKeyLen   = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Meta is what a file carries besides the index.
type Meta struct {
	// Watermark is the writer's note of how far the records had got when
	// it saved (e.g. the highest applied version); the index does not
	// interpret it.
	Watermark uint64
	// Label names the index for its owner (the registry stores its key).
	Label []byte
}

// saveView is a consistent copy of what Save writes, taken under the read
// lock: the neighbour lists (which later inserts change) are copied;
// vectors, keys and versions of existing slots never change, so they are
// shared.
type saveView struct {
	st       *state
	n        int
	links0   []uint32
	upper    [][]uint32
	level    []uint8
	dead     []bool
	entry    uint32
	maxLevel int
	tombs    []tomb
}

type tomb struct {
	key     string
	version uint64
}

// Save writes the index to w in the file format. Searches and writes go on
// meanwhile: Save holds the read lock only to copy the neighbour lists
// (about 130 bytes a vector).
func (x *Index) Save(w io.Writer, meta Meta) error {
	if len(meta.Label) > maxLabelLen {
		return fmt.Errorf("label of %d bytes: %w", len(meta.Label), ErrInvalid)
	}
	x.wmu.Lock() // no mutation half-done while the view is taken
	x.mu.RLock()
	if x.closed {
		x.mu.RUnlock()
		x.wmu.Unlock()
		return ErrClosed
	}
	st := x.st
	g := st.g
	v := saveView{
		st: st, n: g.n,
		links0: append([]uint32(nil), g.links0...),
		upper:  make([][]uint32, g.n),
		level:  append([]uint8(nil), g.level...),
		dead:   append([]bool(nil), g.dead...),
		entry:  g.entry, maxLevel: g.maxLevel,
	}
	for i, u := range g.upper {
		v.upper[i] = append([]uint32(nil), u...)
	}
	for k, e := range x.entries {
		if e.slot < 0 {
			v.tombs = append(v.tombs, tomb{k, e.version})
		}
	}
	x.mu.RUnlock()
	x.wmu.Unlock()
	return x.cfg.write(w, &v, meta)
}

func (c Config) write(w io.Writer, v *saveView, meta Meta) error {
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 1<<20)
	g := v.st.g
	var hdr [headerSize]byte
	copy(hdr[:], fileMagic)
	le := binary.LittleEndian
	le.PutUint32(hdr[8:], fileFormat)
	le.PutUint32(hdr[12:], uint32(c.Dim))
	le.PutUint32(hdr[16:], uint32(c.M))
	le.PutUint32(hdr[20:], uint32(c.EfConstruction))
	le.PutUint32(hdr[24:], uint32(v.n))
	le.PutUint32(hdr[28:], uint32(len(v.tombs)))
	le.PutUint32(hdr[32:], v.entry)
	le.PutUint32(hdr[36:], uint32(int32(v.maxLevel)))
	le.PutUint64(hdr[40:], meta.Watermark)
	le.PutUint64(hdr[48:], c.Seed)
	le.PutUint64(hdr[56:], math.Float64bits(c.RebuildShare))
	bw.Write(hdr[:])
	buf := binary.AppendUvarint(nil, uint64(len(meta.Label)))
	bw.Write(buf)
	bw.Write(meta.Label)
	for i := range v.n {
		buf = append(buf[:0], v.level[i], 0)
		if v.dead[i] {
			buf[1] = 1
		}
		buf = le.AppendUint64(buf, v.st.vers[i])
		buf = binary.AppendUvarint(buf, uint64(len(v.st.keys[i])))
		buf = append(buf, v.st.keys[i]...)
		for _, u := range v.upper[i] {
			buf = le.AppendUint32(buf, u)
		}
		bw.Write(buf)
	}
	for i := range v.n {
		buf = buf[:0]
		for _, f := range g.vec(uint32(i)) {
			buf = le.AppendUint32(buf, math.Float32bits(f))
		}
		bw.Write(buf)
	}
	const block = 1 << 14
	for lo := 0; lo < len(v.links0); lo += block {
		buf = buf[:0]
		for _, u := range v.links0[lo:min(lo+block, len(v.links0))] {
			buf = le.AppendUint32(buf, u)
		}
		bw.Write(buf)
	}
	for _, t := range v.tombs {
		buf = le.AppendUint64(buf[:0], t.version)
		buf = binary.AppendUvarint(buf, uint64(len(t.key)))
		buf = append(buf, t.key...)
		bw.Write(buf)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write vector index: %w", err)
	}
	buf = le.AppendUint32(buf[:0], crc.Sum32())
	buf = append(buf, endMagic...)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write vector index: %w", err)
	}
	return nil
}

// reader reads the file format, checksumming as it goes; the first error
// sticks and every later read is a no-op.
type reader struct {
	r   *bufio.Reader
	crc hash.Hash32
	err error
	buf []byte
}

func (r *reader) fail(what string, err error) {
	if r.err == nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = errors.New("truncated")
		}
		r.err = fmt.Errorf("%s: %v: %w", what, err, ErrCorrupt)
	}
}

func (r *reader) full(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	b := r.buf[:n]
	if _, err := io.ReadFull(r.r, b); err != nil {
		r.fail(what, err)
		return nil
	}
	r.crc.Write(b)
	return b
}

func (r *reader) uvarint(what string, max uint64) uint64 {
	if r.err != nil {
		return 0
	}
	var b [binary.MaxVarintLen64]byte
	for i := range b {
		c, err := r.r.ReadByte()
		if err != nil {
			r.fail(what, err)
			return 0
		}
		b[i] = c
		if c < 0x80 {
			r.crc.Write(b[:i+1])
			n, k := binary.Uvarint(b[:i+1])
			if k <= 0 || n > max {
				r.fail(what, errors.New("out of range"))
				return 0
			}
			return n
		}
	}
	r.fail(what, errors.New("overlong varint"))
	return 0
}

// Load reads an index written by Save. The index starts not ready (see
// SetReady). A file that is truncated, fails its checksum or holds an
// impossible graph is refused with ErrCorrupt.
func Load(rd io.Reader) (*Index, Meta, error) {
	r := &reader{r: bufio.NewReaderSize(rd, 1<<20), crc: crc32.New(castagnoli)}
	le := binary.LittleEndian
	var meta Meta
	hdr := r.full(headerSize, "vector index header")
	if r.err != nil {
		return nil, meta, r.err
	}
	if string(hdr[:8]) != fileMagic {
		return nil, meta, fmt.Errorf("not a vector index file: %w", ErrCorrupt)
	}
	if f := le.Uint32(hdr[8:]); f != fileFormat {
		return nil, meta, fmt.Errorf("vector index format %d (want %d): %w", f, fileFormat, ErrCorrupt)
	}
	cfg := Config{
		Dim: int(le.Uint32(hdr[12:])), M: int(le.Uint32(hdr[16:])), EfConstruction: int(le.Uint32(hdr[20:])),
		Seed: le.Uint64(hdr[48:]), RebuildShare: math.Float64frombits(le.Uint64(hdr[56:])),
	}
	n, ntombs := int(le.Uint32(hdr[24:])), int(le.Uint32(hdr[28:]))
	entryPt, maxLvl := le.Uint32(hdr[32:]), int(int32(le.Uint32(hdr[36:])))
	meta.Watermark = le.Uint64(hdr[40:])
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, meta, fmt.Errorf("vector index header: %v: %w", err, ErrCorrupt)
	}
	if n < 0 || n > math.MaxInt32 || maxLvl < -1 || maxLvl > maxLevel || (n == 0) != (maxLvl < 0) || (n > 0 && int(entryPt) >= n) {
		return nil, meta, fmt.Errorf("vector index header: impossible counts: %w", ErrCorrupt)
	}
	meta.Label = append([]byte(nil), r.full(int(r.uvarint("label", maxLabelLen)), "label")...)

	st := newState(cfg, cfg.Seed+uint64(n))
	g := st.g
	g.entry, g.maxLevel = entryPt, maxLvl
	for i := 0; i < n && r.err == nil; i++ {
		b := r.full(10, "slot")
		if b == nil {
			break
		}
		lvl, dead, ver := int(b[0]), b[1] != 0, le.Uint64(b[2:])
		if lvl > maxLvl || b[1] > 1 {
			r.fail("slot", errors.New("bad level or flag"))
			break
		}
		key := string(r.full(int(r.uvarint("key", maxKeyLen)), "key"))
		var up []uint32
		if lvl > 0 {
			ub := r.full(lvl*(g.m+1)*4, "upper layers")
			up = make([]uint32, lvl*(g.m+1))
			for j := range up {
				if ub != nil {
					up[j] = le.Uint32(ub[4*j:])
				}
			}
		}
		g.upper = append(g.upper, up)
		g.level = append(g.level, uint8(lvl))
		g.dead = append(g.dead, dead)
		st.keys = append(st.keys, key)
		st.vers = append(st.vers, ver)
		if dead {
			st.dead++
		}
	}
	for i := 0; i < n && r.err == nil; i++ {
		if i%chunkSlots == 0 {
			g.vecs = append(g.vecs, make([]float32, chunkSlots*g.dim))
		}
		b := r.full(4*g.dim, "vectors")
		if b == nil {
			break
		}
		v := g.vecs[i/chunkSlots][(i%chunkSlots)*g.dim:]
		for j := range g.dim {
			v[j] = math.Float32frombits(le.Uint32(b[4*j:]))
		}
	}
	g.n = n
	stride := g.m0 + 1
	g.links0 = make([]uint32, 0, n*stride)
	for i := 0; i < n && r.err == nil; i++ {
		b := r.full(4*stride, "layer 0")
		for j := 0; b != nil && j < stride; j++ {
			g.links0 = append(g.links0, le.Uint32(b[4*j:]))
		}
	}
	entries := make(map[string]entry, n)
	for i := 0; i < ntombs && r.err == nil; i++ {
		b := r.full(8, "tombstone")
		key := string(r.full(int(r.uvarint("tombstone key", maxKeyLen)), "tombstone key"))
		if b != nil {
			entries[key] = entry{slot: -1, version: le.Uint64(b)}
		}
	}
	if r.err != nil {
		return nil, meta, r.err
	}
	sum := r.crc.Sum32()
	var tr [12]byte
	if _, err := io.ReadFull(r.r, tr[:]); err != nil {
		r.fail("trailer", err)
		return nil, meta, r.err
	}
	if le.Uint32(tr[:]) != sum || string(tr[4:]) != endMagic {
		return nil, meta, fmt.Errorf("checksum mismatch: %w", ErrCorrupt)
	}
	if _, err := r.r.ReadByte(); err != io.EOF {
		return nil, meta, fmt.Errorf("data after the trailer: %w", ErrCorrupt)
	}
	if err := st.check(entries); err != nil {
		return nil, meta, err
	}
	x := newIndex(cfg, st)
	x.entries = entries
	return x, meta, nil
}

// check verifies what a checksum cannot: that every neighbour is a slot
// and every live key has one slot. It fills entries with the live keys.
func (st *state) check(entries map[string]entry) error {
	g := st.g
	for i := range g.n {
		for l := 0; l <= int(g.level[i]); l++ {
			ns := g.listRaw(uint32(i), l)
			mmax := g.m
			if l == 0 {
				mmax = g.m0
			}
			if int(ns[0]) > mmax {
				return fmt.Errorf("slot %d layer %d: %d neighbours: %w", i, l, ns[0], ErrCorrupt)
			}
			for _, e := range ns[1 : 1+ns[0]] {
				if int(e) >= g.n || int(g.level[e]) < l {
					return fmt.Errorf("slot %d layer %d: neighbour %d: %w", i, l, e, ErrCorrupt)
				}
			}
		}
		if g.dead[i] {
			continue
		}
		if _, dup := entries[st.keys[i]]; dup || st.keys[i] == "" {
			return fmt.Errorf("slot %d: key %q live twice or empty: %w", i, st.keys[i], ErrCorrupt)
		}
		entries[st.keys[i]] = entry{slot: int32(i), version: st.vers[i]}
	}
	if g.n > 0 && int(g.level[g.entry]) != g.maxLevel {
		return fmt.Errorf("entry point below the top layer: %w", ErrCorrupt)
	}
	return nil
}

// listRaw is slot i's list on layer l with its count word first.
func (g *graph) listRaw(i uint32, l int) []uint32 {
	if l == 0 {
		return g.links0[int(i)*(g.m0+1) : int(i+1)*(g.m0+1)]
	}
	return g.upper[i][(l-1)*(g.m+1) : l*(g.m+1)]
}

// WriteFile saves the index to path atomically: a temporary file beside
// it, synced, then renamed over it, and the directory synced.
func (x *Index) WriteFile(path string, meta Meta) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("create vector index file: %w", err)
	}
	err = x.Save(f, meta)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save vector index %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// ReadFile loads an index saved by WriteFile (see Load).
func ReadFile(path string) (*Index, Meta, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Meta{}, fmt.Errorf("open vector index file: %w", err)
	}
	defer f.Close()
	x, meta, err := Load(f)
	if err != nil {
		return nil, meta, fmt.Errorf("load vector index %s: %w", path, err)
	}
	return x, meta, nil
}
