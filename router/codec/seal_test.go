package codec

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

func newKey(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func TestParseKeys(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	kr := keyring(t, "# rotated 2025-01", k1, "", "  "+k2+"  ")
	if kr.Len() != 2 {
		t.Errorf("Len = %d, want 2", kr.Len())
	}
	first := keyring(t, k1)
	if kr.CurrentID() != first.CurrentID() {
		t.Errorf("CurrentID = %s, want the first key's %s", kr.CurrentID(), first.CurrentID())
	}
	for name, text := range map[string]string{
		"empty":     "",
		"comments":  "# nothing\n",
		"short":     k1[:62],
		"long":      k1 + "00",
		"not hex":   strings.Repeat("zz", 32),
		"duplicate": k1 + "\n" + k1,
	} {
		if _, err := ParseKeys([]byte(text)); err == nil {
			t.Errorf("ParseKeys(%s) = nil, want an error", name)
		}
	}
}

func TestSealOpen(t *testing.T) {
	kr := keyring(t, newKey(t))
	plain := []byte("some value")
	v := kr.Seal("contexts", []byte("t\x00id"), plain)
	if !IsSealed(v) || bytes.Contains(v, plain) {
		t.Fatalf("seal = %x: not sealed, or holds the plaintext", v)
	}
	got, err := kr.Open("contexts", []byte("t\x00id"), v)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open(seal(x)) = %q, %v; want %q", got, err, plain)
	}
	// Bound to bucket and key: a sealed value moved elsewhere does not open.
	if _, err := kr.Open("contexts", []byte("t\x00other"), v); err == nil || !strings.Contains(err.Error(), "tampered") {
		t.Errorf("open under another key = %v, want a tampering error", err)
	}
	if _, err := kr.Open("topics", []byte("t\x00id"), v); err == nil {
		t.Errorf("open in another bucket = nil, want an error")
	}
	// Every byte after the header is authenticated.
	for i := 2 + keyIDLen; i < len(v); i++ {
		bad := bytes.Clone(v)
		bad[i] ^= 0x40
		if _, err := kr.Open("contexts", []byte("t\x00id"), bad); err == nil {
			t.Fatalf("open with byte %d flipped = nil, want an error", i)
		}
	}
	// Plaintext stored before encryption reads as it is.
	if got, err := kr.Open("topics", []byte("t"), []byte(`{"name":"t"}`)); err != nil || string(got) != `{"name":"t"}` {
		t.Errorf("open(plaintext) = %q, %v", got, err)
	}
}

// TestPlaintextNeverLooksSealed guards the rule repair's pass-through rests
// on: nothing the router stores in the clear begins like a sealed value.
func TestPlaintextNeverLooksSealed(t *testing.T) {
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := c.EncodeDocument(&schema.Document{Metadata: schema.Metadata{ID: "x"}, Content: schema.Content{Text: strings.Repeat("é", 500)}})
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string][]byte{
		"topic":   schema.TopicJSON(&schema.Topic{Name: "t"}),
		"context": doc,
		"vector":  storage.EncodeVector(storage.Vector{Model: "m", Values: []float32{1}}),
	} {
		if len(v) > 0 && v[0] == SealMagic {
			t.Errorf("a stored %s begins with the seal's magic byte", name)
		}
	}
}

func keyring(t testing.TB, keys ...string) *Keyring {
	t.Helper()
	kr, err := ParseKeys([]byte(strings.Join(keys, "\n")))
	if err != nil {
		t.Fatalf("ParseKeys: %v", err)
	}
	return kr
}
