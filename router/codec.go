package router

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/klauspost/compress/zstd"
)

// A stored context value is
//
//	format (1) | uvarint len meta | meta JSON
//	           | codec (1) | uvarint len body | body
//	           | uvarint n | n float32 little endian (the embeddings)
//
// Metadata stays uncompressed so lists read it without decompressing the
// body. The body is the content JSON without its embeddings, compressed
// with zstd when that saves space (the codec byte says which). Embeddings
// are stored as raw float32: 4 bytes a dimension, which zstd cannot shrink.
//
// The codec byte is one of
//
//	codecRaw      0: the content JSON as it is
//	codecZstd     1: one zstd frame, no dictionary
//	codecZstdDict 2: one zstd frame compressed with a trained dictionary
//
// A codecZstdDict frame names its dictionary in its own header (zstd's
// Dictionary_ID field, 1 to 4 bytes): the record stores no other id.
// Dictionary ids are drawn from zstd's user range, 32768 to 2^31-1, so a
// frame of this codec whose header names no dictionary (id 0) is corrupt.
// Dictionaries are immutable and kept on every shard (compression.go), so
// every codec byte stays readable for good; a router reading a frame of a
// dictionary it does not hold yet loads it from the shards.
const (
	formatV1 = 1

	codecRaw      = 0
	codecZstd     = 1
	codecZstdDict = 2

	// minCompress is the smallest body worth compressing.
	minCompress = 128
	// maxDecoded caps what one body may decompress to, so a corrupt or
	// hostile record cannot exhaust memory.
	maxDecoded = 64 << 20
)

var (
	errCorrupt = errors.New("corrupt stored record")
	// errNoDict: a record needs a compression dictionary that neither the
	// router nor any shard holds.
	errNoDict = errors.New("compression dictionary missing")
)

// codec compresses and decompresses bodies. Its encoders and decoders are
// made once and shared (EncodeAll and DecodeAll are safe for concurrent
// use and pool their state): one plain encoder and decoder, one encoder for
// the current dictionary (replaced whole when another becomes current),
// and one decoder per dictionary known, in a map that is copied on write
// and read through an atomic pointer, so the read path takes no lock.
type codec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder

	cur   atomic.Pointer[dictEncoder]             // nil: no dictionary, plain zstd
	dicts atomic.Pointer[map[uint32]*dictDecoder] // every dictionary known; never modified in place

	mu       sync.Mutex // serialises changes to dicts, and guards fetching
	fetching map[uint32]*dictFetch

	// fetch, when set, loads a dictionary the codec lacks (from the
	// shards); its answer is checked before it is used.
	fetch func(id uint32) ([]byte, error)
	// observe, when set, is told the size of each body encoded, before and
	// after compression (the compression-ratio metrics).
	observe func(in, out int)
}

// dictEncoder compresses with one dictionary.
type dictEncoder struct {
	id  uint32
	enc *zstd.Encoder
}

// dictDecoder decompresses frames of one dictionary; raw is the
// dictionary itself (zstd's dictionary format).
type dictDecoder struct {
	raw []byte
	dec *zstd.Decoder
}

// dictFetch is one load of a missing dictionary from the shards: callers
// that need the same one wait for it. A failed load is remembered for
// dictRetry, so a burst of reads of an unreadable record does not become
// a burst of shard reads.
type dictFetch struct {
	done chan struct{}
	err  error
	at   time.Time // when it failed
}

const dictRetry = time.Second

// zstd's dictionary ids: 1 to 32767 are reserved for registered
// dictionaries and 2^31 and above are reserved; ours are in between.
const (
	minDictID = 32768
	maxDictID = 1<<31 - 1
	// dictMagic opens a dictionary in zstd's format (little endian).
	dictMagic = 0xEC30A437
)

func newCodec() (*codec, error) {
	enc, err := zstd.NewWriter(nil, encoderOptions()...)
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil, decoderOptions()...)
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	c := &codec{enc: enc, dec: dec, fetching: map[uint32]*dictFetch{}}
	c.dicts.Store(&map[uint32]*dictDecoder{})
	return c, nil
}

// dictLevel is the level of dictionary compression. With a trained
// dictionary zstd's fastest level stores about 4 % more than the default
// level on the benchmark's chat corpus (0.337 against 0.323 of the JSON)
// in about half the encoding time, about what plain zstd at the default
// level takes (BenchmarkCodecEncodeChat): the router is CPU-bound on
// writes, and the dictionary already holds most of what the default
// level's longer search would find.
const dictLevel = zstd.SpeedFastest

// dictEncoderOptions are those of the encoder of dictionary raw.
func dictEncoderOptions(raw []byte, o ...zstd.EOption) []zstd.EOption {
	return encoderOptions(append([]zstd.EOption{zstd.WithEncoderLevel(dictLevel), zstd.WithEncoderDict(raw)}, o...)...)
}

// plainLevel is the level of compression without a dictionary: zstd's
// fastest too. On the benchmark's chat corpus it stores 0.524 of the JSON
// against 0.509 at the default level, and the router's durable PUT went
// from about 1,800 to 2,300 a second (kvdb-bench -rows 7b, side by side):
// the default level's larger match tables cost the router a third of its
// CPU per write under load. A trained dictionary gains far more (0.34).
const plainLevel = zstd.SpeedFastest

func encoderOptions(o ...zstd.EOption) []zstd.EOption {
	return append([]zstd.EOption{zstd.WithEncoderLevel(plainLevel), zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithLowerEncoderMem(true)}, o...)
}

func decoderOptions(o ...zstd.DOption) []zstd.DOption {
	return append([]zstd.DOption{zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxDecoded)}, o...)
}

// dictID returns the id a dictionary in zstd's format declares, after
// checking that it is one of ours.
func dictID(raw []byte) (uint32, error) {
	if len(raw) < 8 || binary.LittleEndian.Uint32(raw) != dictMagic {
		return 0, errors.New("not a zstd dictionary")
	}
	id := binary.LittleEndian.Uint32(raw[4:])
	if id < minDictID || id > maxDictID {
		return 0, fmt.Errorf("dictionary id %d is outside zstd's user range", id)
	}
	return id, nil
}

// addDict makes a dictionary known for decoding. It checks that raw is a
// zstd dictionary with id id that zstd accepts; adding one twice is a
// no-op (dictionaries are immutable: an id names one content for good).
func (c *codec) addDict(id uint32, raw []byte) error {
	if got, err := dictID(raw); err != nil {
		return fmt.Errorf("dictionary %d: %w", id, err)
	} else if got != id {
		return fmt.Errorf("dictionary %d: its header says %d", id, got)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.dicts.Load()
	if _, ok := old[id]; ok {
		return nil
	}
	raw = append([]byte(nil), raw...)
	dec, err := zstd.NewReader(nil, decoderOptions(zstd.WithDecoderDicts(raw))...)
	if err != nil {
		return fmt.Errorf("dictionary %d: %w", id, err)
	}
	next := make(map[uint32]*dictDecoder, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[id] = &dictDecoder{raw: raw, dec: dec}
	c.dicts.Store(&next)
	return nil
}

// dict returns a known dictionary.
func (c *codec) dict(id uint32) ([]byte, bool) {
	d, ok := (*c.dicts.Load())[id]
	if !ok {
		return nil, false
	}
	return d.raw, true
}

// dictIDs lists the dictionaries known.
func (c *codec) dictIDs() []uint32 {
	m := *c.dicts.Load()
	ids := make([]uint32, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	return ids
}

// setCurrent makes a known dictionary the one new bodies are compressed
// with; 0 goes back to plain zstd.
func (c *codec) setCurrent(id uint32) error {
	if id == 0 {
		c.cur.Store(nil)
		return nil
	}
	if cur := c.cur.Load(); cur != nil && cur.id == id {
		return nil
	}
	raw, ok := c.dict(id)
	if !ok {
		return fmt.Errorf("%w: dictionary %d is not loaded", errNoDict, id)
	}
	enc, err := zstd.NewWriter(nil, dictEncoderOptions(raw)...)
	if err != nil {
		return fmt.Errorf("dictionary %d: encoder: %w", id, err)
	}
	c.cur.Store(&dictEncoder{id: id, enc: enc})
	return nil
}

// current is the id of the dictionary new bodies are compressed with (0:
// none).
func (c *codec) current() uint32 {
	if cur := c.cur.Load(); cur != nil {
		return cur.id
	}
	return 0
}

// decoderFor returns the decoder of dictionary id, loading the dictionary
// (c.fetch) when the codec does not hold it yet.
func (c *codec) decoderFor(id uint32) (*zstd.Decoder, error) {
	if d, ok := (*c.dicts.Load())[id]; ok {
		return d.dec, nil
	}
	if c.fetch == nil {
		return nil, fmt.Errorf("%w: the record is compressed with dictionary %d, which this router does not hold", errNoDict, id)
	}
	c.mu.Lock()
	f := c.fetching[id]
	leader := f == nil
	if f != nil {
		select {
		case <-f.done:
			if time.Since(f.at) >= dictRetry {
				leader = true
			}
		default:
		}
	}
	if leader {
		f = &dictFetch{done: make(chan struct{})}
		c.fetching[id] = f
	}
	c.mu.Unlock()
	if leader {
		raw, err := c.fetch(id)
		if err == nil {
			err = c.addDict(id, raw)
		}
		c.mu.Lock()
		f.err, f.at = err, time.Now()
		if err == nil {
			delete(c.fetching, id)
		}
		c.mu.Unlock()
		close(f.done)
	}
	<-f.done
	if f.err != nil {
		return nil, f.err
	}
	if d, ok := (*c.dicts.Load())[id]; ok {
		return d.dec, nil
	}
	return nil, fmt.Errorf("%w: dictionary %d", errNoDict, id)
}

// frameDictID reads the dictionary id from a zstd frame's header.
func frameDictID(frame []byte) (uint32, error) {
	var h zstd.Header
	if err := h.Decode(frame); err != nil {
		return 0, fmt.Errorf("%w: zstd frame header: %v", errCorrupt, err)
	}
	if h.Skippable {
		return 0, fmt.Errorf("%w: skippable zstd frame", errCorrupt)
	}
	return h.DictionaryID, nil
}

// encodeDocument turns a validated document into its stored form.
func (c *codec) encodeDocument(d *schema.Document) ([]byte, error) {
	value, _, err := c.encode(d, false)
	return value, err
}

// encodeRendered is encodeDocument that also returns the document as
// appendDocumentJSON renders the stored form, built from the JSON already
// in hand rather than by decompressing what was just compressed: the
// answer to a write.
func (c *codec) encodeRendered(d *schema.Document) (value, rendered []byte, err error) {
	return c.encode(d, true)
}

func (c *codec) encode(d *schema.Document, render bool) (value, rendered []byte, err error) {
	meta, err := json.Marshal(&d.Metadata)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal metadata: %w", err)
	}
	content := d.Content
	content.Embeddings = nil
	body, err := json.Marshal(&content)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal content: %w", err)
	}
	n := len(d.Content.Embeddings)
	out := make([]byte, 0, 1+binary.MaxVarintLen64*3+len(meta)+1+len(body)+4*n)
	out = append(out, formatV1)
	out = binary.AppendUvarint(out, uint64(len(meta)))
	out = append(out, meta...)
	out = c.appendBody(out, body)
	out = binary.AppendUvarint(out, uint64(n))
	emb := len(out)
	for _, f := range d.Content.Embeddings {
		out = binary.LittleEndian.AppendUint32(out, math.Float32bits(f))
	}
	if render {
		rendered, err = appendRendered(make([]byte, 0, 32+len(meta)+len(body)+12*n), meta, body, out[emb:])
	}
	return out, rendered, err
}

func (c *codec) appendBody(dst, body []byte) []byte {
	return c.appendBodyWith(dst, body, c.cur.Load(), c.observe)
}

// appendBodyWith compresses body with dictionary cur (plain zstd when nil),
// or stores it raw when that is no smaller.
func (c *codec) appendBodyWith(dst, body []byte, cur *dictEncoder, observe func(in, out int)) []byte {
	if len(body) >= minCompress {
		codec, enc := byte(codecZstd), c.enc
		if cur != nil {
			codec, enc = codecZstdDict, cur.enc
		}
		z := enc.EncodeAll(body, nil)
		if len(z) < len(body) {
			if observe != nil {
				observe(len(body), len(z))
			}
			dst = append(dst, codec)
			dst = binary.AppendUvarint(dst, uint64(len(z)))
			return append(dst, z...)
		}
	}
	if observe != nil {
		observe(len(body), len(body))
	}
	dst = append(dst, codecRaw)
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	return append(dst, body...)
}

// recompress re-encodes a stored context's body with the current
// dictionary, leaving metadata and embeddings byte for byte as they are,
// so the document reads back identical. It reports false (and nil) when
// there is nothing to do: no dictionary is current, the body is under it
// already, or the new encoding is the same bytes.
func (c *codec) recompress(stored []byte) ([]byte, bool, error) {
	cur := c.cur.Load()
	if cur == nil {
		return nil, false, nil
	}
	s, err := splitStored(stored)
	if err != nil {
		return nil, false, err
	}
	if s.codec == codecZstdDict {
		if id, err := frameDictID(s.body); err == nil && id == cur.id {
			return nil, false, nil
		}
	}
	content, err := c.contentJSON(s)
	if err != nil {
		return nil, false, err
	}
	out := make([]byte, 0, len(stored))
	out = append(out, formatV1)
	out = binary.AppendUvarint(out, uint64(len(s.meta)))
	out = append(out, s.meta...)
	out = c.appendBodyWith(out, content, cur, nil)
	out = binary.AppendUvarint(out, uint64(len(s.emb)/4))
	out = append(out, s.emb...)
	if string(out) == string(stored) {
		return nil, false, nil
	}
	return out, true, nil
}

// storedDoc is a stored value split into its parts, each aliasing it.
type storedDoc struct {
	meta  []byte // metadata JSON
	codec byte
	body  []byte // content JSON without embeddings, maybe compressed
	emb   []byte // n*4 bytes
}

// storedMeta returns the metadata JSON at the front of a stored context,
// and what follows it. It needs only a prefix of the value: lists read the
// first bytes of each record (storage.ScanOptions.ValueLimit).
func storedMeta(v []byte) (meta, rest []byte, err error) {
	if len(v) < 1 || v[0] != formatV1 {
		return nil, nil, fmt.Errorf("%w: unknown format", errCorrupt)
	}
	meta, rest, ok := cutUvarint(v[1:])
	if !ok {
		return nil, nil, fmt.Errorf("%w: metadata", errCorrupt)
	}
	return meta, rest, nil
}

func splitStored(v []byte) (storedDoc, error) {
	var s storedDoc
	var err error
	if s.meta, v, err = storedMeta(v); err != nil {
		return s, err
	}
	var ok bool
	if len(v) < 1 {
		return s, fmt.Errorf("%w: codec", errCorrupt)
	}
	s.codec = v[0]
	if s.codec != codecRaw && s.codec != codecZstd && s.codec != codecZstdDict {
		return s, fmt.Errorf("%w: unknown codec %d", errCorrupt, s.codec)
	}
	if s.body, v, ok = cutUvarint(v[1:]); !ok {
		return s, fmt.Errorf("%w: body", errCorrupt)
	}
	n, k := binary.Uvarint(v)
	if k <= 0 || n > schema.MaxEmbeddings || uint64(len(v)-k) != 4*n {
		return s, fmt.Errorf("%w: embeddings", errCorrupt)
	}
	s.emb = v[k:]
	return s, nil
}

// cutUvarint splits a length-prefixed field off the front of v.
func cutUvarint(v []byte) (field, rest []byte, ok bool) {
	n, k := binary.Uvarint(v)
	if k <= 0 || n > uint64(len(v)-k) {
		return nil, nil, false
	}
	return v[k : k+int(n)], v[k+int(n):], true
}

func (c *codec) contentJSON(s storedDoc) ([]byte, error) {
	dec := c.dec
	switch s.codec {
	case codecRaw:
		return s.body, nil
	case codecZstdDict:
		id, err := frameDictID(s.body)
		if err != nil {
			return nil, err
		}
		if id == 0 {
			return nil, fmt.Errorf("%w: a dictionary frame that names no dictionary", errCorrupt)
		}
		if dec, err = c.decoderFor(id); err != nil {
			return nil, err
		}
	}
	body, err := dec.DecodeAll(s.body, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: decompress: %v", errCorrupt, err)
	}
	return body, nil
}

// appendDocumentJSON renders a stored context as the API's JSON document:
// {"metadata":…,"content":…} with the embeddings written back into content.
// It does no reflection: this is the cache-miss read path.
func (c *codec) appendDocumentJSON(dst []byte, stored []byte, withContent bool) ([]byte, error) {
	if !withContent {
		meta, _, err := storedMeta(stored)
		if err != nil {
			return nil, err
		}
		dst = append(dst, `{"metadata":`...)
		dst = append(dst, meta...)
		return append(dst, '}'), nil
	}
	s, err := splitStored(stored)
	if err != nil {
		return nil, err
	}
	content, err := c.contentJSON(s)
	if err != nil {
		return nil, err
	}
	return appendRendered(dst, s.meta, content, s.emb)
}

// appendRendered appends a document as the API renders it: metadata JSON,
// content JSON (without embeddings), and the embeddings as float32
// little-endian bytes, spliced into the content as json.Marshal would.
func appendRendered(dst, meta, content, emb []byte) ([]byte, error) {
	if len(content) < 2 || content[0] != '{' || content[len(content)-1] != '}' {
		return nil, fmt.Errorf("%w: content is not an object", errCorrupt)
	}
	dst = append(dst, `{"metadata":`...)
	dst = append(dst, meta...)
	dst = append(dst, `,"content":`...)
	if len(emb) == 0 {
		dst = append(dst, content...)
	} else {
		dst = append(dst, content[:len(content)-1]...)
		if len(content) > 2 {
			dst = append(dst, ',')
		}
		dst = append(dst, `"embeddings":[`...)
		for i := 0; i+4 <= len(emb); i += 4 {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendFloat32(dst, math.Float32frombits(binary.LittleEndian.Uint32(emb[i:])))
		}
		dst = append(dst, "]}"...)
	}
	return append(dst, '}'), nil
}

// appendFloat32 formats f as encoding/json formats a float32, so a value
// comes back exactly as json.Marshal would have written it.
func appendFloat32(dst []byte, f float32) []byte {
	abs := math.Abs(float64(f))
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, float64(f), format, -1, 32)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// decodeMetadata reads only the metadata of a stored context.
func decodeMetadata(stored []byte) (schema.Metadata, []byte, error) {
	var m schema.Metadata
	meta, _, err := storedMeta(stored)
	if err != nil {
		return m, nil, err
	}
	if err := json.Unmarshal(meta, &m); err != nil {
		return m, nil, fmt.Errorf("%w: metadata: %v", errCorrupt, err)
	}
	return m, meta, nil
}

// DecodeDocument reads a whole stored context.
func (c *codec) decodeDocument(stored []byte) (*schema.Document, error) {
	s, err := splitStored(stored)
	if err != nil {
		return nil, err
	}
	var d schema.Document
	if err := json.Unmarshal(s.meta, &d.Metadata); err != nil {
		return nil, fmt.Errorf("%w: metadata: %v", errCorrupt, err)
	}
	content, err := c.contentJSON(s)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(content, &d.Content); err != nil {
		return nil, fmt.Errorf("%w: content: %v", errCorrupt, err)
	}
	if n := len(s.emb) / 4; n > 0 {
		d.Content.Embeddings = make([]float32, n)
		for i := range d.Content.Embeddings {
			d.Content.Embeddings[i] = math.Float32frombits(binary.LittleEndian.Uint32(s.emb[4*i:]))
		}
	}
	return &d, nil
}
