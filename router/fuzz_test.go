package router

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/schema"
)

// Fuzz targets for everything that reads bytes a client (or a shard) chose.
// Seeds live in testdata/fuzz/<target>/ beside the f.Add ones; CI runs each
// target for a few seconds (.ci/run). None may panic, and each checks what
// it can of its contract.

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
