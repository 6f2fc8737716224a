package codec

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/klauspost/compress/dict"
	"github.com/klauspost/compress/zstd"
)

const (
	// DictCurrentKey is the key, in schema.BucketDicts, of the record that
	// names the dictionary new bodies are compressed with.
	DictCurrentKey = "current"
	// dictRecordV1 opens a dictionary record:
	//
	//	version 1 (1) | SHA-256 of the dictionary (32) | dictionary (zstd's format)
	dictRecordV1 = 1
	// DictSize is the largest dictionary trained.
	DictSize = 64 << 10
)

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
// DictRetry, so a burst of reads of an unreadable record does not become
// a burst of shard reads.
type dictFetch struct {
	done chan struct{}
	err  error
	at   time.Time // when it failed
}

// DictRetry is how long a failed dictionary load is remembered.
const DictRetry = time.Second

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

// dictID returns the id a dictionary in zstd's format declares, after
// checking that it is one of ours.
func dictID(raw []byte) (uint32, error) {
	if len(raw) < 8 || binary.LittleEndian.Uint32(raw) != dictMagic {
		return 0, errors.New("not a zstd dictionary")
	}
	id := binary.LittleEndian.Uint32(raw[4:])
	if id < MinDictID || id > MaxDictID {
		return 0, fmt.Errorf("dictionary id %d is outside zstd's user range", id)
	}
	return id, nil
}

// addDict makes a dictionary known for decoding. It checks that raw is a
// zstd dictionary with id id that zstd accepts; adding one twice is a
// no-op (dictionaries are immutable: an id names one content for good).
func (c *Codec) AddDict(id uint32, raw []byte) error {
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
func (c *Codec) Dict(id uint32) ([]byte, bool) {
	d, ok := (*c.dicts.Load())[id]
	if !ok {
		return nil, false
	}
	return d.raw, true
}

// dictIDs lists the dictionaries known.
func (c *Codec) DictIDs() []uint32 {
	m := *c.dicts.Load()
	ids := make([]uint32, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	return ids
}

// setCurrent makes a known dictionary the one new bodies are compressed
// with; 0 goes back to plain zstd.
func (c *Codec) SetCurrent(id uint32) error {
	if id == 0 {
		c.cur.Store(nil)
		return nil
	}
	if cur := c.cur.Load(); cur != nil && cur.id == id {
		return nil
	}
	raw, ok := c.Dict(id)
	if !ok {
		return fmt.Errorf("%w: dictionary %d is not loaded", ErrNoDict, id)
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
func (c *Codec) Current() uint32 {
	if cur := c.cur.Load(); cur != nil {
		return cur.id
	}
	return 0
}

// decoderFor returns the decoder of dictionary id, loading the dictionary
// (c.fetch) when the codec does not hold it yet.
func (c *Codec) DecoderFor(id uint32) (*zstd.Decoder, error) {
	if d, ok := (*c.dicts.Load())[id]; ok {
		return d.dec, nil
	}
	if c.fetch == nil {
		return nil, fmt.Errorf("%w: the record is compressed with dictionary %d, which this router does not hold", ErrNoDict, id)
	}
	c.mu.Lock()
	f := c.fetching[id]
	leader := f == nil
	if f != nil {
		select {
		case <-f.done:
			if time.Since(f.at) >= DictRetry {
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
			err = c.AddDict(id, raw)
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
	return nil, fmt.Errorf("%w: dictionary %d", ErrNoDict, id)
}

// frameDictID reads the dictionary id from a zstd frame's header.
func frameDictID(frame []byte) (uint32, error) {
	var h zstd.Header
	if err := h.Decode(frame); err != nil {
		return 0, fmt.Errorf("%w: zstd frame header: %v", ErrCorrupt, err)
	}
	if h.Skippable {
		return 0, fmt.Errorf("%w: skippable zstd frame", ErrCorrupt)
	}
	return h.DictionaryID, nil
}

// Pointer is the "current" record: which dictionary new bodies use,
// with what its training measured.
type Pointer struct {
	ID              uint32    `json:"id"`
	TrainedAt       time.Time `json:"trained_at"`
	Samples         int       `json:"samples"`
	DictionaryBytes int       `json:"dictionary_bytes"`
	RatioBefore     float64   `json:"ratio_before"`
	RatioAfter      float64   `json:"ratio_after"`

	Version uint64 `json:"-"` // of the record
}

func DictKey(id uint32) []byte { return []byte(strconv.FormatUint(uint64(id), 10)) }

// ParseDictKey reads a dictionary key; ok is false for any other key.
func ParseDictKey(k []byte) (uint32, bool) {
	if len(k) == 0 || len(k) > 10 || k[0] == '0' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(k), 10, 32)
	if err != nil || n < MinDictID || n > MaxDictID {
		return 0, false
	}
	return uint32(n), true
}

func EncodeDictRecord(raw []byte) []byte {
	sum := sha256.Sum256(raw)
	out := make([]byte, 0, 1+len(sum)+len(raw))
	out = append(out, dictRecordV1)
	out = append(out, sum[:]...)
	return append(out, raw...)
}

// ParseDictRecord checks a dictionary record read from a shard and
// returns the dictionary.
func ParseDictRecord(id uint32, v []byte) ([]byte, error) {
	if len(v) < 1+sha256.Size+8 || v[0] != dictRecordV1 {
		return nil, fmt.Errorf("dictionary %d: not a dictionary record", id)
	}
	raw := v[1+sha256.Size:]
	if sum := sha256.Sum256(raw); !bytes.Equal(sum[:], v[1:1+sha256.Size]) {
		return nil, fmt.Errorf("dictionary %d: checksum mismatch: the record is corrupt", id)
	}
	got, err := dictID(raw)
	if err != nil {
		return nil, fmt.Errorf("dictionary %d: %w", id, err)
	}
	if got != id {
		return nil, fmt.Errorf("dictionary %d: the record holds dictionary %d", id, got)
	}
	return raw, nil
}

func ParsePointer(rec storage.Record) (*Pointer, error) {
	var p Pointer
	if err := json.Unmarshal(rec.Value, &p); err != nil {
		return nil, fmt.Errorf("current dictionary record: %w", err)
	}
	if p.ID < MinDictID || p.ID > MaxDictID {
		return nil, fmt.Errorf("current dictionary record names id %d", p.ID)
	}
	p.Version = rec.Version
	return &p, nil
}

// DictHashBytes are the minimum match lengths a training tries (the
// builder's advice: 6 to 8 are usually best; which depends on the data).
var DictHashBytes = []int{6, 8}

// BuildDict runs the builder, which may panic on inputs it cannot use.
// The dictionary holds up to DictSize bytes of content, plus its header
// and entropy tables.
func BuildDict(samples [][]byte, id uint32, hashBytes int) (raw []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			raw, err = nil, fmt.Errorf("dictionary builder: %v", p)
		}
	}()
	raw, err = dict.BuildZstdDict(samples, dict.Options{
		MaxDictSize:    DictSize,
		HashBytes:      hashBytes,
		ZstdDictID:     id,
		ZstdDictCompat: true,
		ZstdLevel:      dictLevel, // the dictionary is tuned for the level it is used at
	})
	if err != nil {
		return nil, err
	}
	if got, err := dictID(raw); err != nil || got != id {
		return nil, fmt.Errorf("the builder made no dictionary %d (%v)", id, err)
	}
	return raw, nil
}

// measureDict compresses the held-out bodies as the codec stores them,
// without and with the dictionary, checks that each comes back whole, and
// returns stored bytes / JSON bytes for both.
func (c *Codec) MeasureDict(raw []byte, id uint32, bodies [][]byte) (before, after float64, err error) {
	enc, err := zstd.NewWriter(nil, dictEncoderOptions(raw, zstd.WithEncoderConcurrency(1))...)
	if err != nil {
		return 0, 0, err
	}
	defer enc.Close()
	dec, err := zstd.NewReader(nil, decoderOptions(zstd.WithDecoderDicts(raw), zstd.WithDecoderConcurrency(1))...)
	if err != nil {
		return 0, 0, err
	}
	defer dec.Close()
	de := &dictEncoder{id: id, enc: enc}
	var in, plain, with int64
	for _, b := range bodies {
		in += int64(len(b))
		plain += int64(len(c.AppendBodyWith(nil, b, nil, nil)))
		stored := c.AppendBodyWith(nil, b, de, nil)
		with += int64(len(stored))
		if stored[0] != codecZstdDict {
			continue
		}
		z, _, _ := cutUvarint(stored[1:])
		back, err := dec.DecodeAll(z, nil)
		if err != nil || !bytes.Equal(back, b) {
			return 0, 0, fmt.Errorf("a body does not come back whole through dictionary %d: %v", id, err)
		}
	}
	if in == 0 {
		return 0, 0, errors.New("nothing to measure")
	}
	return float64(plain) / float64(in), float64(with) / float64(in), nil
}

// newDictID draws an unused id from zstd's user range.
func (c *Codec) NewDictID() (uint32, error) {
	for range 8 {
		var b [4]byte
		rand.Read(b[:])
		id := MinDictID + binary.LittleEndian.Uint32(b[:])%(MaxDictID-MinDictID+1)
		if _, known := c.Dict(id); !known {
			return id, nil
		}
	}
	return 0, apierr.Errorf(apierr.CodeInternal, "no unused dictionary id found")
}

// CheckRestoredDictKey refuses a record of the dictionary bucket that is not
// one the router writes.
func CheckRestoredDictKey(key []byte) error {
	if string(key) == DictCurrentKey {
		return nil
	}
	if _, ok := ParseDictKey(key); !ok {
		return apierr.Errorf(apierr.CodeInvalidArgument, "bucket %s: key %q is neither a dictionary id nor %q", schema.BucketDicts, schema.Truncate(string(key)), DictCurrentKey)
	}
	return nil
}
