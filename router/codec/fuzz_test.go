package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-kvdb/go-kvdb/internal/chatgen"
	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/schema"
)

// FuzzStoredDocument: whatever a shard hands back, the codec answers an
// error or a document, never a panic, and never decompresses past its cap.
// The codec holds one dictionary (fuzzDictID) and can fetch no other, so
// every codec byte is covered: raw, zstd, zstd with a known dictionary and
// with an unknown one.
// fuzzNow is the fixed "now" of the fuzz targets.
var fuzzNow = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func FuzzStoredDocument(f *testing.F) {
	c, err := New(Options{})
	if err != nil {
		f.Fatal(err)
	}
	good, _ := c.EncodeDocument(&schema.Document{Metadata: schema.Metadata{ID: "c"}, Content: schema.Content{Text: strings.Repeat("compress me ", 40), Embeddings: []float32{1, 2}}})
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	f.Add([]byte{formatV1, 0, codecZstd, 4, 0x28, 0xb5, 0x2f, 0xfd, 0})
	f.Add(zstdBombRecord(f, 1<<20))
	const fuzzDictID = 40_000
	if err := c.AddDict(fuzzDictID, testDict(f, fuzzDictID)); err != nil {
		f.Fatal(err)
	}
	c.SetCurrent(fuzzDictID)
	c.fetch = func(id uint32) ([]byte, error) { return nil, fmt.Errorf("%w: %d", ErrNoDict, id) }
	body, _ := json.Marshal(chatgen.Body(1))
	var content schema.Content
	json.Unmarshal(body, &content)
	withDict, _ := c.EncodeDocument(&schema.Document{Metadata: schema.Metadata{ID: "d"}, Content: content})
	f.Add(withDict)
	f.Add(withDict[:len(withDict)-3])
	// A record of a dictionary the codec does not hold.
	oc, _ := New(Options{})
	oc.AddDict(fuzzDictID+1, testDict(f, fuzzDictID+1))
	oc.SetCurrent(fuzzDictID + 1)
	other, _ := oc.EncodeDocument(&schema.Document{Metadata: schema.Metadata{ID: "o"}, Content: content})
	if _, err := c.AppendDocumentJSON(nil, other, true); !errors.Is(err, ErrNoDict) {
		f.Fatalf("a record of an unknown dictionary rendered: %v", err)
	}
	f.Add(other)
	f.Add([]byte{formatV1, 0, codecZstdDict, 4, 0x28, 0xb5, 0x2f, 0xfd, 0})
	f.Fuzz(func(t *testing.T, stored []byte) {
		for _, withContent := range []bool{false, true} {
			if out, err := c.AppendDocumentJSON(nil, stored, withContent); err == nil && len(out) > len(stored)+maxDecoded+16*schema.MaxEmbeddings+64 {
				t.Fatalf("appendDocumentJSON rendered %d bytes from %d", len(out), len(stored))
			}
		}
		c.DecodeDocument(stored)
		DecodeMetadata(stored)
	})
}

// FuzzOpenSealed: a sealed value that was not made by seal never opens,
// an unsealed one comes back as it is, and nothing panics the opener.
func FuzzOpenSealed(f *testing.F) {
	kr, err := ParseKeys([]byte(strings.Repeat("ab", 32)))
	if err != nil {
		f.Fatal(err)
	}
	good := kr.Seal("contexts", []byte("t\x00c"), []byte("plain"))
	f.Add(good)
	f.Add(good[:sealOverhead])
	f.Add([]byte{SealMagic, sealVersion})
	f.Add([]byte(`{"name":"t"}`))
	f.Fuzz(func(t *testing.T, v []byte) {
		plain, err := kr.Open("contexts", []byte("t\x00c"), v)
		switch {
		case err != nil:
		case IsSealed(v) && !bytes.Equal(plain, []byte("plain")):
			// "plain" is all this key ever sealed (in any process: the
			// key is fixed, the nonce is not), so anything else is forged.
			t.Fatalf("a value seal did not make opened: %x → %q", v, plain)
		case !IsSealed(v) && !bytes.Equal(plain, v):
			t.Fatalf("an unsealed value came back changed: %x → %x", v, plain)
		}
	})
}

// FuzzDecodeDocument: a request body is either refused with a client
// error, or becomes a document that stores, renders and decodes back.
func FuzzDecodeDocument(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"metadata":{"id":"c1","tags":["a","b"],"model":"m"},"content":{"text":"hi","embeddings":[0.1,2],"messages":[{"role":"user","content":"x"}]}}`,
		`{"metadata":{"id":"c1"},"metadata":{"id":"c2"}}`,
		`{"content":{"text":"a","text":"b"}}`,
		`{"content":{"embeddings":"nope"}}`,
		`{"content":{"messages":[{"role":"pirate","content":"x"}]}}`,
		`[` + strings.Repeat(`[`, 100) + `]`,
		"{\"content\":{\"text\":\"\xff\xfe\"}}",
		`{"metadata":{"id":"../../etc/passwd"}}`,
		`{"metadata":{"id":"a\u0000b"}}`,
		`{"content":{"text":"x"}} trailing`,
		`{"metadata":{"created_at":"yesterday"}}`,
		`{"content":{"summary":{"text":"s","messages":5}}}`,
	} {
		f.Add([]byte(s))
	}
	c, err := New(Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := schema.DecodeDocument(body, fuzzNow)
		if err != nil {
			var apiErr *apierr.Error
			if !errors.As(err, &apiErr) || apiErr.Code != apierr.CodeInvalidArgument {
				t.Fatalf("DecodeDocument(%q) = %v, want an invalid_argument error", body, err)
			}
			return
		}
		if !utf8.Valid(body) {
			t.Fatalf("DecodeDocument accepted invalid UTF-8 %q", body)
		}
		if _, dup := schema.DuplicateKey(body); dup {
			t.Fatalf("DecodeDocument accepted a duplicate key in %q", body)
		}
		if d.Metadata.ID != "" && !schema.ValidID(d.Metadata.ID) {
			t.Fatalf("DecodeDocument accepted id %q", d.Metadata.ID)
		}
		stored, err := c.EncodeDocument(d)
		if err != nil {
			t.Fatalf("encodeDocument(%q) = %v", body, err)
		}
		rendered, err := c.AppendDocumentJSON(nil, stored, true)
		if err != nil || !json.Valid(rendered) {
			t.Fatalf("appendDocumentJSON(encodeDocument(%q)) = %q, %v; want valid JSON", body, rendered, err)
		}
		back, err := c.DecodeDocument(stored)
		if err != nil || back.Metadata.ID != d.Metadata.ID || len(back.Content.Messages) != len(d.Content.Messages) || len(back.Content.Embeddings) != len(d.Content.Embeddings) {
			t.Fatalf("DecodeDocument(encodeDocument(%q)) = %+v, %v", body, back, err)
		}
	})
}
