package feed

import (
	"encoding/base64"
	"errors"
	"testing"
)

func TestTokenRoundTrip(t *testing.T) {
	names := []string{"sh-1", "sh-2"}
	at := []pos{{"0123456789abcdef", 42}, {"fedcba9876543210", 0}}
	got, err := decodeToken(encodeToken(names, at))
	if err != nil {
		t.Fatalf("decodeToken(encodeToken(...)) = %v", err)
	}
	for i, n := range names {
		if got[n] != at[i] {
			t.Errorf("decodeToken: %s = %+v, want %+v", n, got[n], at[i])
		}
	}
}

func TestTokenRejectsMalformed(t *testing.T) {
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, tok := range []string{"!!", "", b64("sh-1:abc"), b64("sh-1:abc:x"), b64(":abc:1"), b64("sh-1:abc:1;"), b64("sh-1:abc:-1")} {
		if _, err := decodeToken(tok); !errors.Is(err, ErrBadToken) {
			t.Errorf("decodeToken(%q) = %v, want ErrBadToken", tok, err)
		}
	}
}
