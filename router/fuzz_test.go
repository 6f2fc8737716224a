package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/schema"
)

// Fuzz targets for everything that reads bytes a client (or a shard) chose.
// Seeds live in testdata/fuzz/<target>/ beside the f.Add ones; CI runs each
// target for a few seconds (.ci/run). None may panic, and each checks what
// it can of its contract.

var fuzzNow = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

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
	c, err := newCodec()
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
		stored, err := c.encodeDocument(d)
		if err != nil {
			t.Fatalf("encodeDocument(%q) = %v", body, err)
		}
		rendered, err := c.appendDocumentJSON(nil, stored, true)
		if err != nil || !json.Valid(rendered) {
			t.Fatalf("appendDocumentJSON(encodeDocument(%q)) = %q, %v; want valid JSON", body, rendered, err)
		}
		back, err := c.decodeDocument(stored)
		if err != nil || back.Metadata.ID != d.Metadata.ID || len(back.Content.Messages) != len(d.Content.Messages) || len(back.Content.Embeddings) != len(d.Content.Embeddings) {
			t.Fatalf("DecodeDocument(encodeDocument(%q)) = %+v, %v", body, back, err)
		}
	})
}

// FuzzDecodeCursor: a cursor decodes to a valid id or is a client error.
func FuzzDecodeCursor(f *testing.F) {
	for _, s := range []string{"", encodeCursor("c1"), encodeCursor("a\x00b"), "!!!", "YQ==", encodeCursor(strings.Repeat("a", 300)), "Li4vZXRj"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		last, err := decodeCursor(s, schema.ValidID)
		if err != nil {
			var apiErr *apierr.Error
			if !errors.As(err, &apiErr) || apiErr.Code != apierr.CodeInvalidArgument {
				t.Fatalf("decodeCursor(%q) = %v, want invalid_argument", s, err)
			}
			return
		}
		if !schema.ValidID(last) {
			t.Fatalf("decodeCursor(%q) = %q, not an id", s, last)
		}
	})
}

// FuzzStoredDocument: whatever a shard hands back, the codec answers an
// error or a document, never a panic, and never decompresses past its cap.
// The codec holds one dictionary (fuzzDictID) and can fetch no other, so
// every codec byte is covered: raw, zstd, zstd with a known dictionary and
// with an unknown one.
func FuzzStoredDocument(f *testing.F) {
	c, err := newCodec()
	if err != nil {
		f.Fatal(err)
	}
	good, _ := c.encodeDocument(&schema.Document{Metadata: schema.Metadata{ID: "c"}, Content: schema.Content{Text: strings.Repeat("compress me ", 40), Embeddings: []float32{1, 2}}})
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	f.Add([]byte{formatV1, 0, codecZstd, 4, 0x28, 0xb5, 0x2f, 0xfd, 0})
	f.Add(zstdBombRecord(f, 1<<20))
	const fuzzDictID = 40_000
	if err := c.addDict(fuzzDictID, testDict(f, fuzzDictID)); err != nil {
		f.Fatal(err)
	}
	c.setCurrent(fuzzDictID)
	c.fetch = func(id uint32) ([]byte, error) { return nil, fmt.Errorf("%w: %d", errNoDict, id) }
	body, _ := json.Marshal(chatBody(1))
	var content schema.Content
	json.Unmarshal(body, &content)
	withDict, _ := c.encodeDocument(&schema.Document{Metadata: schema.Metadata{ID: "d"}, Content: content})
	f.Add(withDict)
	f.Add(withDict[:len(withDict)-3])
	// A record of a dictionary the codec does not hold.
	oc, _ := newCodec()
	oc.addDict(fuzzDictID+1, testDict(f, fuzzDictID+1))
	oc.setCurrent(fuzzDictID + 1)
	other, _ := oc.encodeDocument(&schema.Document{Metadata: schema.Metadata{ID: "o"}, Content: content})
	if _, err := c.appendDocumentJSON(nil, other, true); !errors.Is(err, errNoDict) {
		f.Fatalf("a record of an unknown dictionary rendered: %v", err)
	}
	f.Add(other)
	f.Add([]byte{formatV1, 0, codecZstdDict, 4, 0x28, 0xb5, 0x2f, 0xfd, 0})
	f.Fuzz(func(t *testing.T, stored []byte) {
		for _, withContent := range []bool{false, true} {
			if out, err := c.appendDocumentJSON(nil, stored, withContent); err == nil && len(out) > len(stored)+maxDecoded+16*schema.MaxEmbeddings+64 {
				t.Fatalf("appendDocumentJSON rendered %d bytes from %d", len(out), len(stored))
			}
		}
		c.decodeDocument(stored)
		decodeMetadata(stored)
	})
}

// FuzzOpenSealed: a sealed value that was not made by seal never opens,
// an unsealed one comes back as it is, and nothing panics the opener.
func FuzzOpenSealed(f *testing.F) {
	kr, err := ParseKeys([]byte(strings.Repeat("ab", 32)))
	if err != nil {
		f.Fatal(err)
	}
	good := kr.seal("contexts", []byte("t\x00c"), []byte("plain"))
	f.Add(good)
	f.Add(good[:sealOverhead])
	f.Add([]byte{sealMagic, sealVersion})
	f.Add([]byte(`{"name":"t"}`))
	f.Fuzz(func(t *testing.T, v []byte) {
		plain, err := kr.open("contexts", []byte("t\x00c"), v)
		switch {
		case err != nil:
		case isSealed(v) && !bytes.Equal(plain, []byte("plain")):
			// "plain" is all this key ever sealed (in any process: the
			// key is fixed, the nonce is not), so anything else is forged.
			t.Fatalf("a value seal did not make opened: %x → %q", v, plain)
		case !isSealed(v) && !bytes.Equal(plain, v):
			t.Fatalf("an unsealed value came back changed: %x → %x", v, plain)
		}
	})
}

// FuzzAuthFile: any auth file loads or is refused with an error.
func FuzzAuthFile(f *testing.F) {
	f.Add([]byte("[role_rate_limits]\nreader = 2\n"))
	f.Add([]byte("[[keys]]\nname = \"a\"\nid = \"0123456789abcdef\"\nrole = \"reader\"\nsalt = \"" + strings.Repeat("00", 16) + "\"\nhash = \"" + strings.Repeat("11", 32) + "\"\ntopics = [\"a-*\"]\n"))
	f.Add([]byte("[[keys]\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		a, err := parseAuth(raw)
		if err != nil {
			return
		}
		if a.lookup("kvdb_0123456789abcdef_x") != nil {
			t.Fatalf("a secret whose hash nobody knows matched a key")
		}
	})
}
