package schema

import (
	"strings"
	"testing"
)

func TestValidToken(t *testing.T) {
	for s, want := range map[string]bool{
		"a": true, "my-topic": true, "A.b_c-9": true, "-a": false, ".a": false, "a/b": false, "a b": false,
		"": false, strings.Repeat("x", 128): true, strings.Repeat("x", 129): false, "a:b": false, "é": false,
	} {
		if got := ValidName(s); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", s, got, want)
		}
	}
	for s, want := range map[string]bool{"a:b": true, ":a": false, strings.Repeat("x", 256): true, strings.Repeat("x", 257): false} {
		if got := ValidID(s); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", s, got, want)
		}
	}
}
