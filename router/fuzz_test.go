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
