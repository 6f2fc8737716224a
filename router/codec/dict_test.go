package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-kvdb/go-kvdb/internal/chatgen"
	"github.com/go-kvdb/go-kvdb/router/schema"
)

// testDict builds a dictionary from chat bodies.
func testDict(t testing.TB, id uint32) []byte {
	t.Helper()
	raw, err := BuildDict(chatgen.Bodies(10_000, 200), id, 6)
	if err != nil {
		t.Fatalf("BuildDict: %v", err)
	}
	return raw
}

func TestCodecDictionary(t *testing.T) {
	const id = 1_234_567
	raw := testDict(t, id)
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	doc := &schema.Document{Metadata: schema.Metadata{ID: "d1", Model: "m"}, Content: schema.Content{Text: "hello"}}
	body, _ := json.Marshal(chatgen.Body(1))
	if err := json.Unmarshal(body, &doc.Content); err != nil {
		t.Fatal(err)
	}
	doc.Content.Embeddings = []float32{0.5, -1, 3}
	plain, err := c.EncodeDocument(doc)
	if err != nil || codecOf(t, plain) != codecZstd {
		t.Fatalf("encode without a dictionary: codec %d, %v; want plain zstd", codecOf(t, plain), err)
	}
	want, err := c.AppendDocumentJSON(nil, plain, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetCurrent(id); !errors.Is(err, ErrNoDict) {
		t.Errorf("setCurrent of an unknown dictionary = %v, want ErrNoDict", err)
	}
	if err := c.AddDict(id+1, raw); err == nil {
		t.Errorf("addDict under another id = nil, want an error")
	}
	if err := c.AddDict(id, raw[:6]); err == nil {
		t.Errorf("addDict of a cut dictionary header = nil, want an error")
	}
	if err := c.AddDict(id, raw); err != nil {
		t.Fatal(err)
	}
	if err := c.SetCurrent(id); err != nil || c.Current() != id {
		t.Fatalf("setCurrent = %v, current %d", err, c.Current())
	}
	withDict, err := c.EncodeDocument(doc)
	if err != nil || codecOf(t, withDict) != codecZstdDict {
		t.Fatalf("encode with a dictionary: codec %d, %v; want %d", codecOf(t, withDict), err, codecZstdDict)
	}
	s, _ := splitStored(withDict)
	if got, _ := frameDictID(s.body); got != id {
		t.Errorf("frame header names dictionary %d, want %d", got, id)
	}
	if len(withDict) >= len(plain) {
		t.Errorf("stored with the dictionary: %d bytes, without: %d; want smaller", len(withDict), len(plain))
	}
	for name, v := range map[string][]byte{"plain": plain, "dictionary": withDict} {
		got, err := c.AppendDocumentJSON(nil, v, true)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("render of the %s record = %s, %v; want %s", name, got, err, want)
		}
		d, err := c.DecodeDocument(v)
		if err != nil || d.Content.Text != doc.Content.Text || len(d.Content.Messages) != len(doc.Content.Messages) || len(d.Content.Embeddings) != 3 {
			t.Errorf("decode of the %s record = %+v, %v", name, d, err)
		}
	}

	// Rewrite: same document, under the dictionary; nothing to do twice.
	out, changed, err := c.Recompress(plain)
	if err != nil || !changed || codecOf(t, out) != codecZstdDict || len(out) >= len(plain) {
		t.Fatalf("recompress(plain) = %d bytes codec %d, %v, %v", len(out), codecOf(t, out), changed, err)
	}
	if got, _ := c.AppendDocumentJSON(nil, out, true); !bytes.Equal(got, want) {
		t.Errorf("recompressed record renders %s, want %s", got, want)
	}
	if _, changed, err := c.Recompress(out); changed || err != nil {
		t.Errorf("recompress of a record under the current dictionary = %v, %v; want nothing to do", changed, err)
	}

	// A router that lacks the dictionary and cannot load it fails clearly.
	other, _ := New(Options{})
	if _, err := other.AppendDocumentJSON(nil, withDict, true); !errors.Is(err, ErrNoDict) || !strings.Contains(err.Error(), strconv.Itoa(id)) {
		t.Errorf("render without the dictionary = %v, want ErrNoDict naming %d", err, id)
	}
	if got, err := other.AppendDocumentJSON(nil, plain, true); err != nil || !bytes.Equal(got, want) {
		t.Errorf("plain record in a codec without dictionaries = %v", err)
	}
	// One that can load it does so once, and caches it.
	var fetches atomic.Int32
	other.fetch = func(got uint32) ([]byte, error) {
		fetches.Add(1)
		if got != id {
			return nil, fmt.Errorf("%w: %d", ErrNoDict, got)
		}
		return raw, nil
	}
	for range 3 {
		if got, err := other.AppendDocumentJSON(nil, withDict, true); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("render with a fetched dictionary = %s, %v", got, err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("dictionary fetched %d times, want once", n)
	}
	// A fetch that brings something else is refused, and not retried at once.
	bad, _ := New(Options{})
	bad.fetch = func(uint32) ([]byte, error) { fetches.Add(1); return testDict(t, id+7), nil }
	fetches.Store(0)
	for range 2 {
		if _, err := bad.AppendDocumentJSON(nil, withDict, true); err == nil || !strings.Contains(err.Error(), "header says") {
			t.Errorf("render with a wrong dictionary fetched = %v, want an error", err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("a failed fetch was repeated %d times at once, want once", n)
	}

	// A dictionary frame that names no dictionary is corrupt.
	z := c.enc.EncodeAll(body, nil)
	noID := []byte{formatV1, 2, '{', '}', codecZstdDict}
	noID = append(noID, appendUvarintBytes(z)...)
	noID = append(noID, 0)
	if _, err := c.AppendDocumentJSON(nil, noID, true); !errors.Is(err, ErrCorrupt) {
		t.Errorf("dictionary codec without a dictionary id = %v, want ErrCorrupt", err)
	}
}

func appendUvarintBytes(b []byte) []byte {
	var out []byte
	n := uint64(len(b))
	for n >= 0x80 {
		out = append(out, byte(n)|0x80)
		n >>= 7
	}
	return append(append(out, byte(n)), b...)
}

// codecOf reports the codec byte of a stored (plaintext) context.
func codecOf(t testing.TB, value []byte) byte {
	t.Helper()
	s, err := splitStored(value)
	if err != nil {
		t.Fatalf("stored context: %v", err)
	}
	return s.codec
}
