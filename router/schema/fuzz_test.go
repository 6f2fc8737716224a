package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/go-kvdb/go-kvdb/router/apierr"
)

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
			{ValidName(s), CheckName(s), maxNameLen, false},
			{ValidID(s), CheckID(s), maxIDLen, true},
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

// FuzzDuplicateKey checks DuplicateKey against encoding/json's tokenizer
// on valid JSON in valid UTF-8, which is all DecodeJSON hands it (it
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
		got, dup := DuplicateKey(body)
		want, wantDup := refDuplicateKey(body)
		if dup != wantDup || (dup && got != want) {
			t.Fatalf("DuplicateKey(%q) = %q, %v; want %q, %v", body, got, dup, want, wantDup)
		}
	})
}

// refDuplicateKey is DuplicateKey written the slow, obvious way.
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

// FuzzDecodeCursor: a cursor decodes to a valid id or is a client error.
func FuzzDecodeCursor(f *testing.F) {
	for _, s := range []string{"", EncodeCursor("c1"), EncodeCursor("a\x00b"), "!!!", "YQ==", EncodeCursor(strings.Repeat("a", 300)), "Li4vZXRj"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		last, err := DecodeCursor(s, ValidID)
		if err != nil {
			var apiErr *apierr.Error
			if !errors.As(err, &apiErr) || apiErr.Code != apierr.CodeInvalidArgument {
				t.Fatalf("DecodeCursor(%q) = %v, want invalid_argument", s, err)
			}
			return
		}
		if !ValidID(last) {
			t.Fatalf("DecodeCursor(%q) = %q, not an id", s, last)
		}
	})
}
