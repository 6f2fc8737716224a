package router

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"

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
const (
	formatV1 = 1

	codecRaw  = 0
	codecZstd = 1

	// minCompress is the smallest body worth compressing.
	minCompress = 128
	// maxDecoded caps what one body may decompress to, so a corrupt or
	// hostile record cannot exhaust memory.
	maxDecoded = 64 << 20
)

var errCorrupt = errors.New("corrupt stored record")

// codec compresses and decompresses bodies. Its encoder and decoder are made
// once and shared: EncodeAll and DecodeAll are safe for concurrent use.
type codec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
	// observe, when set, is told the size of each body encoded, before and
	// after compression (the compression-ratio metrics).
	observe func(in, out int)
}

func newCodec() (*codec, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxDecoded))
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return &codec{enc: enc, dec: dec}, nil
}

// encodeDocument turns a validated document into its stored form.
func (c *codec) encodeDocument(d *Document) ([]byte, error) {
	meta, err := json.Marshal(&d.Metadata)
	if err != nil {
		return nil, fmt.Errorf("marshal metadata: %w", err)
	}
	content := d.Content
	content.Embeddings = nil
	body, err := json.Marshal(&content)
	if err != nil {
		return nil, fmt.Errorf("marshal content: %w", err)
	}
	n := len(d.Content.Embeddings)
	out := make([]byte, 0, 1+binary.MaxVarintLen64*3+len(meta)+1+len(body)+4*n)
	out = append(out, formatV1)
	out = binary.AppendUvarint(out, uint64(len(meta)))
	out = append(out, meta...)
	out = c.appendBody(out, body)
	out = binary.AppendUvarint(out, uint64(n))
	for _, f := range d.Content.Embeddings {
		out = binary.LittleEndian.AppendUint32(out, math.Float32bits(f))
	}
	return out, nil
}

func (c *codec) appendBody(dst, body []byte) []byte {
	if len(body) >= minCompress {
		z := c.enc.EncodeAll(body, nil)
		if len(z) < len(body) {
			if c.observe != nil {
				c.observe(len(body), len(z))
			}
			dst = append(dst, codecZstd)
			dst = binary.AppendUvarint(dst, uint64(len(z)))
			return append(dst, z...)
		}
	}
	if c.observe != nil {
		c.observe(len(body), len(body))
	}
	dst = append(dst, codecRaw)
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	return append(dst, body...)
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
	if s.codec != codecRaw && s.codec != codecZstd {
		return s, fmt.Errorf("%w: unknown codec %d", errCorrupt, s.codec)
	}
	if s.body, v, ok = cutUvarint(v[1:]); !ok {
		return s, fmt.Errorf("%w: body", errCorrupt)
	}
	n, k := binary.Uvarint(v)
	if k <= 0 || n > maxEmbeddings || uint64(len(v)-k) != 4*n {
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
	if s.codec == codecRaw {
		return s.body, nil
	}
	body, err := c.dec.DecodeAll(s.body, nil)
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
	dst = append(dst, `{"metadata":`...)
	dst = append(dst, s.meta...)
	if withContent {
		content, err := c.contentJSON(s)
		if err != nil {
			return nil, err
		}
		if len(content) < 2 || content[0] != '{' || content[len(content)-1] != '}' {
			return nil, fmt.Errorf("%w: content is not an object", errCorrupt)
		}
		dst = append(dst, `,"content":`...)
		if len(s.emb) == 0 {
			dst = append(dst, content...)
		} else {
			dst = append(dst, content[:len(content)-1]...)
			if len(content) > 2 {
				dst = append(dst, ',')
			}
			dst = append(dst, `"embeddings":[`...)
			for i := 0; i+4 <= len(s.emb); i += 4 {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = appendFloat32(dst, math.Float32frombits(binary.LittleEndian.Uint32(s.emb[i:])))
			}
			dst = append(dst, "]}"...)
		}
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
func decodeMetadata(stored []byte) (Metadata, []byte, error) {
	var m Metadata
	meta, _, err := storedMeta(stored)
	if err != nil {
		return m, nil, err
	}
	if err := json.Unmarshal(meta, &m); err != nil {
		return m, nil, fmt.Errorf("%w: metadata: %v", errCorrupt, err)
	}
	return m, meta, nil
}

// decodeDocument reads a whole stored context.
func (c *codec) decodeDocument(stored []byte) (*Document, error) {
	s, err := splitStored(stored)
	if err != nil {
		return nil, err
	}
	var d Document
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
