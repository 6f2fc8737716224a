package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-kvdb/go-kvdb/router/apierr"
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
		d, err := decodeDocument(body, fuzzNow)
		if err != nil {
			var apiErr *apierr.Error
			if !errors.As(err, &apiErr) || apiErr.Code != apierr.CodeInvalidArgument {
				t.Fatalf("decodeDocument(%q) = %v, want an invalid_argument error", body, err)
			}
			return
		}
		if !utf8.Valid(body) {
			t.Fatalf("decodeDocument accepted invalid UTF-8 %q", body)
		}
		if _, dup := duplicateKey(body); dup {
			t.Fatalf("decodeDocument accepted a duplicate key in %q", body)
		}
		if d.Metadata.ID != "" && !validID(d.Metadata.ID) {
			t.Fatalf("decodeDocument accepted id %q", d.Metadata.ID)
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
			t.Fatalf("decodeDocument(encodeDocument(%q)) = %+v, %v", body, back, err)
		}
	})
}

// FuzzNames: names and ids accepted by validation hold only the characters
// of their pattern, so nothing that reaches a key or a path can traverse,
// hide a separator or a NUL.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"t", "a.b-c_d", "..", "a/b", "a%2Fb", "a\x00b", "-a", "a:b", strings.Repeat("a", 129), strings.Repeat("a", 257), "é", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, c := range []struct {
			valid bool
			check error
			max   int
			colon bool
		}{
			{validName(s), checkName(s), maxNameLen, false},
			{validID(s), checkID(s), maxIDLen, true},
		} {
			if c.valid != (c.check == nil) {
				t.Fatalf("valid and check disagree on %q", s)
			}
			if !c.valid {
				continue
			}
			if len(s) == 0 || len(s) > c.max || s[0] == '.' || s[0] == '-' || s[0] == '_' || s[0] == ':' {
				t.Fatalf("accepted %q", s)
			}
			for i := 0; i < len(s); i++ {
				ch := s[i]
				ok := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '_' || ch == '-' || (c.colon && ch == ':')
				if !ok {
					t.Fatalf("accepted %q with byte %q", s, ch)
				}
			}
		}
	})
}

// FuzzDecodeCursor: a cursor decodes to a valid id or is a client error.
func FuzzDecodeCursor(f *testing.F) {
	for _, s := range []string{"", encodeCursor("c1"), encodeCursor("a\x00b"), "!!!", "YQ==", encodeCursor(strings.Repeat("a", 300)), "Li4vZXRj"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		last, err := decodeCursor(s, validID)
		if err != nil {
			var apiErr *apierr.Error
			if !errors.As(err, &apiErr) || apiErr.Code != apierr.CodeInvalidArgument {
				t.Fatalf("decodeCursor(%q) = %v, want invalid_argument", s, err)
			}
			return
		}
		if !validID(last) {
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
	good, _ := c.encodeDocument(&Document{Metadata: Metadata{ID: "c"}, Content: Content{Text: strings.Repeat("compress me ", 40), Embeddings: []float32{1, 2}}})
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
	var content Content
	json.Unmarshal(body, &content)
	withDict, _ := c.encodeDocument(&Document{Metadata: Metadata{ID: "d"}, Content: content})
	f.Add(withDict)
	f.Add(withDict[:len(withDict)-3])
	// A record of a dictionary the codec does not hold.
	oc, _ := newCodec()
	oc.addDict(fuzzDictID+1, testDict(f, fuzzDictID+1))
	oc.setCurrent(fuzzDictID + 1)
	other, _ := oc.encodeDocument(&Document{Metadata: Metadata{ID: "o"}, Content: content})
	if _, err := c.appendDocumentJSON(nil, other, true); !errors.Is(err, errNoDict) {
		f.Fatalf("a record of an unknown dictionary rendered: %v", err)
	}
	f.Add(other)
	f.Add([]byte{formatV1, 0, codecZstdDict, 4, 0x28, 0xb5, 0x2f, 0xfd, 0})
	f.Fuzz(func(t *testing.T, stored []byte) {
		for _, withContent := range []bool{false, true} {
			if out, err := c.appendDocumentJSON(nil, stored, withContent); err == nil && len(out) > len(stored)+maxDecoded+16*maxEmbeddings+64 {
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

// FuzzDuplicateKey checks duplicateKey against encoding/json's tokenizer
// on valid JSON in valid UTF-8, which is all decodeJSON hands it (it
// refuses other bodies first). encoding/json reads every invalid byte of a
// key as U+FFFD, so two different invalid keys would count as one there.
func FuzzDuplicateKey(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"a":2}`, `{"a":{"a":1},"b":[{"a":1,"a":2}]}`, `{"a":1,"\u0061":2}`, `{"a\"b":1,"a\"b":2}`, `["a","a"]`, `{"x":"{\"a\":1}","y":"\"a\""}`, `{"a":[],"b":{},"a":null}`} {
		f.Add([]byte(s))
	}
	f.Add([]byte("{\"\xbc\":0,\"\xcd\":0}")) // invalid UTF-8: outside the contract, skipped
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) || !utf8.Valid(body) {
			return
		}
		got, dup := duplicateKey(body)
		want, wantDup := refDuplicateKey(body)
		if dup != wantDup || (dup && got != want) {
			t.Fatalf("duplicateKey(%q) = %q, %v; want %q, %v", body, got, dup, want, wantDup)
		}
	})
}

// refDuplicateKey is duplicateKey written the slow, obvious way.
func refDuplicateKey(body []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	type frame struct {
		object bool
		keys   map[string]bool
		key    bool // the next string is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) || err != nil {
			return "", false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				if top != nil && top.object {
					top.key = true
				}
				stack = append(stack, &frame{object: true, keys: map[string]bool{}, key: true})
			case '[':
				if top != nil && top.object {
					top.key = true
				}
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
			}
		case string:
			if top != nil && top.object && top.key {
				if top.keys[v] {
					return v, true
				}
				top.keys[v] = true
				top.key = false
				continue
			}
			if top != nil && top.object {
				top.key = true
			}
		default:
			if top != nil && top.object {
				top.key = true
			}
		}
	}
}
