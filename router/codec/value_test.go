package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/router/schema"
)

func randomDoc(rng *rand.Rand) *schema.Document {
	d := &schema.Document{Metadata: schema.Metadata{
		ID:        fmt.Sprintf("id-%d", rng.IntN(1e6)),
		CreatedAt: "2024-03-20T10:00:00Z",
		UpdatedAt: time.Unix(rng.Int64N(1e9), 0).UTC().Format(time.RFC3339Nano),
	}}
	if rng.IntN(2) == 0 {
		d.Metadata.Model = "llama2"
	}
	for range rng.IntN(4) {
		d.Metadata.Tags = append(d.Metadata.Tags, fmt.Sprintf("tag%d", rng.IntN(100)))
	}
	if rng.IntN(3) > 0 {
		d.Content.Text = strings.Repeat("the quick brown fox \"quoted\" \n ünïcode ", rng.IntN(200))
	}
	for range rng.IntN(3) {
		// Numbered, as Normalize leaves every document it validates.
		d.Content.Messages = append(d.Content.Messages, schema.Message{Role: "user", Content: "hello <b>&</b>", Seq: uint64(len(d.Content.Messages) + 1)})
	}
	if n := rng.IntN(3) * 384; n > 0 {
		d.Content.Embeddings = make([]float32, n)
		for i := range d.Content.Embeddings {
			d.Content.Embeddings[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(20)-10)))
		}
	}
	return d
}

// TestCodecRoundTrip checks that the hand-written renderer produces exactly
// what encoding/json makes of the document, and decoding gives it back.
func TestCodecRoundTrip(t *testing.T) {
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		d := randomDoc(rng)
		stored, err := c.EncodeDocument(d)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		got, err := c.AppendDocumentJSON(nil, stored, true)
		if err != nil {
			t.Fatalf("render #%d: %v", i, err)
		}
		want, _ := json.Marshal(d)
		if !bytes.Equal(got, want) {
			t.Fatalf("render #%d =\n%s\nwant\n%s", i, got, want)
		}
		meta, err := c.AppendDocumentJSON(nil, stored, false)
		wantMeta, _ := json.Marshal(struct {
			Metadata schema.Metadata `json:"metadata"`
		}{d.Metadata})
		if err != nil || !bytes.Equal(meta, wantMeta) {
			t.Fatalf("render metadata #%d = %s, %v; want %s", i, meta, err, wantMeta)
		}
		back, err := c.DecodeDocument(stored)
		if err != nil || !reflect.DeepEqual(back, d) {
			t.Fatalf("decode #%d = %+v, %v; want %+v", i, back, err, d)
		}
		// The answer to a write is rendered from the JSON in hand; it
		// must be what a later read renders from the stored form.
		value, rendered, err := c.EncodeRendered(d)
		if err != nil || !bytes.Equal(rendered, got) {
			t.Fatalf("encodeRendered #%d = %s, %v; want %s", i, rendered, err, got)
		}
		if again, err := c.AppendDocumentJSON(nil, value, true); err != nil || !bytes.Equal(again, got) {
			t.Fatalf("render of encodeRendered's value #%d = %s, %v; want %s", i, again, err, got)
		}
	}
}

func TestCodecCompresses(t *testing.T) {
	c, _ := New(Options{})
	d := &schema.Document{Content: schema.Content{Text: strings.Repeat("a conversation about databases and caches. ", 100)}}
	raw, _ := json.Marshal(d)
	stored, _ := c.EncodeDocument(d)
	if len(stored) >= len(raw)/2 {
		t.Errorf("stored %d bytes for %d bytes of JSON, want compression", len(stored), len(raw))
	}
	small := &schema.Document{Content: schema.Content{Text: "hi"}}
	stored, _ = c.EncodeDocument(small)
	if s, _ := splitStored(stored); s.codec != codecRaw {
		t.Errorf("small body codec = %d, want raw", s.codec)
	}
	emb := &schema.Document{Content: schema.Content{Embeddings: make([]float32, 768)}}
	stored, _ = c.EncodeDocument(emb)
	if perDim := float64(len(stored)) / 768; perDim > 4.1 {
		t.Errorf("embedding costs %.2f bytes a dimension, want at most 4.1", perDim)
	}
}

func TestCodecRejectsCorruptRecords(t *testing.T) {
	c, _ := New(Options{})
	stored, _ := c.EncodeDocument(&schema.Document{
		Metadata: schema.Metadata{ID: "a"},
		Content:  schema.Content{Text: strings.Repeat("compressible ", 50), Embeddings: []float32{1, 2, 3}},
	})
	for n := range len(stored) {
		if _, err := c.AppendDocumentJSON(nil, stored[:n], true); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("render of %d of %d bytes = %v, want ErrCorrupt", n, len(stored), err)
		}
	}
	bad := bytes.Clone(stored)
	bad[0] = 9
	if _, err := c.AppendDocumentJSON(nil, bad, true); !errors.Is(err, ErrCorrupt) {
		t.Errorf("unknown format = %v, want ErrCorrupt", err)
	}
	// A body that decompresses past the cap is refused, not inflated.
	bomb := c.enc.EncodeAll(make([]byte, maxDecoded+1<<20), nil)
	v := []byte{formatV1, 2, '{', '}', codecZstd}
	v = appendUvarint(v, len(bomb))
	v = append(v, bomb...)
	v = append(v, 0)
	if _, err := c.AppendDocumentJSON(nil, v, true); !errors.Is(err, ErrCorrupt) {
		t.Errorf("decompression bomb = %v, want ErrCorrupt", err)
	}
}

func appendUvarint(b []byte, n int) []byte {
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return append(b, byte(n))
}

func TestAppendFloat32MatchesJSON(t *testing.T) {
	for _, f := range []float32{0, 1, -1, 0.1, 0.2, 1e-7, 1.5e-6, 1e20, 1e21, 3.4e38, -2.5e-10, math.SmallestNonzeroFloat32, 123456.79} {
		want, _ := json.Marshal(f)
		if got := appendFloat32(nil, f); string(got) != string(want) {
			t.Errorf("appendFloat32(%g) = %s, want %s", f, got, want)
		}
	}
}
