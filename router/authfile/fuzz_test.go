package authfile_test

import (
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/router/authfile"
)

// FuzzAuthFile: any auth file loads or is refused with an error.
func FuzzAuthFile(f *testing.F) {
	f.Add([]byte("[role_rate_limits]\nreader = 2\n"))
	f.Add([]byte("[[keys]]\nname = \"a\"\nid = \"0123456789abcdef\"\nrole = \"reader\"\nsalt = \"" + strings.Repeat("00", 16) + "\"\nhash = \"" + strings.Repeat("11", 32) + "\"\ntopics = [\"a-*\"]\n"))
	f.Add([]byte("[[keys]\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		a, err := authfile.ParseAuth(raw)
		if err != nil {
			return
		}
		if a.Lookup("kvdb_0123456789abcdef_x") != nil {
			t.Fatalf("a secret whose hash nobody knows matched a key")
		}
	})
}
