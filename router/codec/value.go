package codec

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

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

	codecRaw      = Raw
	codecZstd     = Zstd
	codecZstdDict = ZstdDict

	// minCompress is the smallest body worth compressing.
	minCompress = 128
	// maxDecoded caps what one body may decompress to, so a corrupt or
	// hostile record cannot exhaust memory.
	maxDecoded = 64 << 20
)

var (
	ErrCorrupt = errors.New("corrupt stored record")
	// ErrNoDict: a record needs a compression dictionary that neither the
	// router nor any shard holds.
	ErrNoDict = errors.New("compression dictionary missing")
)

// Codec compresses and decompresses bodies. Its encoders and decoders are
// made once and shared (EncodeAll and DecodeAll are safe for concurrent
// use and pool their state): one plain encoder and decoder, one encoder for
// the current dictionary (replaced whole when another becomes current),
// and one decoder per dictionary known, in a map that is copied on write
// and read through an atomic pointer, so the read path takes no lock.
type Codec struct {
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

// zstd's dictionary ids: 1 to 32767 are reserved for registered
// dictionaries and 2^31 and above are reserved; ours are in between.
const (
	MinDictID = 32768
	MaxDictID = 1<<31 - 1
	// dictMagic opens a dictionary in zstd's format (little endian).
	dictMagic = 0xEC30A437
)

// Options tune New. The zero value is usable.
type Options struct {
	// Fetch, when set, loads a dictionary the codec lacks (from the
	// shards); its answer is checked before it is used.
	Fetch func(id uint32) ([]byte, error)
	// Observe, when set, is told the size of each body encoded, before and
	// after compression (the compression-ratio metrics).
	Observe func(in, out int)
}

// New makes a codec with no dictionary yet.
func New(o Options) (*Codec, error) {
	enc, err := zstd.NewWriter(nil, encoderOptions()...)
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil, decoderOptions()...)
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	c := &Codec{enc: enc, dec: dec, fetching: map[uint32]*dictFetch{}, fetch: o.Fetch, observe: o.Observe}
	c.dicts.Store(&map[uint32]*dictDecoder{})
	return c, nil
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

// encodeDocument turns a validated document into its stored form.
func (c *Codec) EncodeDocument(d *schema.Document) ([]byte, error) {
	value, _, err := c.Encode(d, false)
	return value, err
}

// encodeRendered is encodeDocument that also returns the document as
// appendDocumentJSON renders the stored form, built from the JSON already
// in hand rather than by decompressing what was just compressed: the
// answer to a write.
func (c *Codec) EncodeRendered(d *schema.Document) (value, rendered []byte, err error) {
	return c.Encode(d, true)
}

func (c *Codec) Encode(d *schema.Document, render bool) (value, rendered []byte, err error) {
	meta, err := json.Marshal(&d.Metadata)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal metadata: %w", err)
	}
	content := storedContent{Conv: d.Content.Conversation, Content: d.Content}
	content.Embeddings = nil
	if content.Conv != nil {
		content.Messages = nil // records of their own
	}
	body, err := json.Marshal(&content)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal content: %w", err)
	}
	n := len(d.Content.Embeddings)
	out := make([]byte, 0, 1+binary.MaxVarintLen64*3+len(meta)+1+len(body)+4*n)
	out = append(out, formatV1)
	out = binary.AppendUvarint(out, uint64(len(meta)))
	out = append(out, meta...)
	out = c.AppendBody(out, body)
	out = binary.AppendUvarint(out, uint64(n))
	emb := len(out)
	for _, f := range d.Content.Embeddings {
		out = binary.LittleEndian.AppendUint32(out, math.Float32bits(f))
	}
	if render {
		rendered, err = appendRendered(make([]byte, 0, 32+len(meta)+len(body)+12*n), meta, stripConv(body), out[emb:])
	}
	return out, rendered, err
}

func (c *Codec) AppendBody(dst, body []byte) []byte {
	return c.AppendBodyWith(dst, body, c.cur.Load(), c.observe)
}

// appendBodyWith compresses body with dictionary cur (plain zstd when nil),
// or stores it raw when that is no smaller.
func (c *Codec) AppendBodyWith(dst, body []byte, cur *dictEncoder, observe func(in, out int)) []byte {
	if len(body) >= minCompress {
		Codec, enc := byte(codecZstd), c.enc
		if cur != nil {
			Codec, enc = codecZstdDict, cur.enc
		}
		z := enc.EncodeAll(body, nil)
		if len(z) < len(body) {
			if observe != nil {
				observe(len(body), len(z))
			}
			dst = append(dst, Codec)
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
func (c *Codec) Recompress(stored []byte) ([]byte, bool, error) {
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
	out = c.AppendBodyWith(out, content, cur, nil)
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
		return nil, nil, fmt.Errorf("%w: unknown format", ErrCorrupt)
	}
	meta, rest, ok := cutUvarint(v[1:])
	if !ok {
		return nil, nil, fmt.Errorf("%w: metadata", ErrCorrupt)
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
		return s, fmt.Errorf("%w: Codec", ErrCorrupt)
	}
	s.codec = v[0]
	if s.codec != codecRaw && s.codec != codecZstd && s.codec != codecZstdDict {
		return s, fmt.Errorf("%w: unknown Codec %d", ErrCorrupt, s.codec)
	}
	if s.body, v, ok = cutUvarint(v[1:]); !ok {
		return s, fmt.Errorf("%w: body", ErrCorrupt)
	}
	n, k := binary.Uvarint(v)
	if k <= 0 || n > schema.MaxEmbeddings || uint64(len(v)-k) != 4*n {
		return s, fmt.Errorf("%w: embeddings", ErrCorrupt)
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

func (c *Codec) contentJSON(s storedDoc) ([]byte, error) {
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
			return nil, fmt.Errorf("%w: a dictionary frame that names no dictionary", ErrCorrupt)
		}
		if dec, err = c.DecoderFor(id); err != nil {
			return nil, err
		}
	}
	body, err := dec.DecodeAll(s.body, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: decompress: %v", ErrCorrupt, err)
	}
	return body, nil
}

// appendDocumentJSON renders a stored context as the API's JSON document:
// {"metadata":…,"content":…} with the embeddings written back into content.
// It does no reflection: this is the cache-miss read path.
func (c *Codec) AppendDocumentJSON(dst []byte, stored []byte, withContent bool) ([]byte, error) {
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
	if unnumbered(content) {
		return renderWithMessages(dst, s, content, nil)
	}
	return appendRendered(dst, s.meta, stripConv(content), s.emb)
}

// unnumbered reports whether content JSON holds inline messages stored
// before messages had seqs. (In JSON text a key "seq" cannot be confused
// with a string's content, where its quotes would be escaped.)
func unnumbered(content []byte) bool {
	return bytes.Contains(content, []byte(`"messages":[{`)) && !bytes.Contains(content, []byte(`"seq":`))
}

// AppendDocumentWithMessages renders a stored context as
// AppendDocumentJSON does, with msgs as its content.messages: a
// records-format conversation, read from its records. With msgs nil the
// stored messages are rendered, numbered from 1.
func (c *Codec) AppendDocumentWithMessages(dst []byte, stored []byte, msgs []schema.Message) ([]byte, error) {
	s, err := splitStored(stored)
	if err != nil {
		return nil, err
	}
	content, err := c.contentJSON(s)
	if err != nil {
		return nil, err
	}
	return renderWithMessages(dst, s, content, msgs)
}

// renderWithMessages is AppendDocumentWithMessages of a stored context
// already split, and its content JSON.
func renderWithMessages(dst []byte, s storedDoc, content []byte, msgs []schema.Message) ([]byte, error) {
	var sc storedContent
	if err := json.Unmarshal(content, &sc); err != nil {
		return nil, fmt.Errorf("%w: content: %v", ErrCorrupt, err)
	}
	if msgs != nil || sc.Conv != nil {
		sc.Content.Messages = msgs
	} else {
		for i := range sc.Content.Messages {
			sc.Content.Messages[i].Seq = uint64(i + 1)
		}
	}
	sc.Conv = nil
	body, err := json.Marshal(&sc)
	if err != nil {
		return nil, fmt.Errorf("marshal content: %w", err)
	}
	return appendRendered(dst, s.meta, body, s.emb)
}

// storedContent is the content JSON as stored: the conversation header,
// when the messages are records of their own, first (so stripConv finds
// it at a fixed place), then the content without its messages.
type storedContent struct {
	Conv *schema.Conversation `json:"_conv,omitempty"`
	schema.Content
}

const convPrefix = `{"_conv":`

// stripConv returns content JSON without its conversation header: what
// clients see. The header is the first member when present.
func stripConv(content []byte) []byte {
	if !bytes.HasPrefix(content, []byte(convPrefix)) {
		return content
	}
	dec := json.NewDecoder(bytes.NewReader(content[len(convPrefix):]))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return content // corrupt: left for the decoder to report
	}
	rest := content[len(convPrefix)+int(dec.InputOffset()):]
	if len(rest) > 0 && rest[0] == ',' {
		return append([]byte{'{'}, rest[1:]...)
	}
	return []byte("{}")
}

// ConversationOf returns the conversation header of a stored context, nil
// when its messages (if any) are inside it.
func (c *Codec) ConversationOf(stored []byte) (*schema.Conversation, error) {
	content, err := c.ContentJSON(stored)
	if err != nil || !bytes.HasPrefix(content, []byte(convPrefix)) {
		return nil, err
	}
	var sc storedContent
	if err := json.Unmarshal(content, &sc); err != nil {
		return nil, fmt.Errorf("%w: content: %v", ErrCorrupt, err)
	}
	return sc.Conv, nil
}

// appendRendered appends a document as the API renders it: metadata JSON,
// content JSON (without embeddings), and the embeddings as float32
// little-endian bytes, spliced into the content as json.Marshal would.
func appendRendered(dst, meta, content, emb []byte) ([]byte, error) {
	if len(content) < 2 || content[0] != '{' || content[len(content)-1] != '}' {
		return nil, fmt.Errorf("%w: content is not an object", ErrCorrupt)
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

// DecodeMetadata reads only the metadata of a stored context.
func DecodeMetadata(stored []byte) (schema.Metadata, []byte, error) {
	var m schema.Metadata
	meta, _, err := storedMeta(stored)
	if err != nil {
		return m, nil, err
	}
	if err := json.Unmarshal(meta, &m); err != nil {
		return m, nil, fmt.Errorf("%w: metadata: %v", ErrCorrupt, err)
	}
	return m, meta, nil
}

// DecodeDocument reads a whole stored context.
func (c *Codec) DecodeDocument(stored []byte) (*schema.Document, error) {
	s, err := splitStored(stored)
	if err != nil {
		return nil, err
	}
	var d schema.Document
	if err := json.Unmarshal(s.meta, &d.Metadata); err != nil {
		return nil, fmt.Errorf("%w: metadata: %v", ErrCorrupt, err)
	}
	content, err := c.contentJSON(s)
	if err != nil {
		return nil, err
	}
	var sc storedContent
	if err := json.Unmarshal(content, &sc); err != nil {
		return nil, fmt.Errorf("%w: content: %v", ErrCorrupt, err)
	}
	d.Content = sc.Content
	d.Content.Conversation = sc.Conv
	if n := len(s.emb) / 4; n > 0 {
		d.Content.Embeddings = make([]float32, n)
		for i := range d.Content.Embeddings {
			d.Content.Embeddings[i] = math.Float32frombits(binary.LittleEndian.Uint32(s.emb[4*i:]))
		}
	}
	return &d, nil
}

// ContentJSON is the content JSON (without embeddings) of a stored
// context, decompressed.
func (c *Codec) ContentJSON(stored []byte) ([]byte, error) {
	s, err := splitStored(stored)
	if err != nil {
		return nil, err
	}
	return c.contentJSON(s)
}

// HoldsMeta reports whether v, a stored context or the front of one (a
// scan with a value limit), holds its whole metadata.
func HoldsMeta(v []byte) bool {
	_, _, err := storedMeta(v)
	return err == nil
}

// The codec bytes, as BodyCodec reports them.
const (
	Raw      = 0 // the content JSON as it is
	Zstd     = 1 // one zstd frame, no dictionary
	ZstdDict = 2 // one zstd frame of a trained dictionary
)

// BodyCodec is the codec byte of a stored (plaintext) context: how its
// body is compressed.
func BodyCodec(stored []byte) (byte, error) {
	s, err := splitStored(stored)
	return s.codec, err
}
