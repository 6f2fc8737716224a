package authfile_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/router/authfile"
	"github.com/go-kvdb/go-kvdb/router/authfile/authfiletest"
)

func TestAddKeyWritesAFileTheRouterReads(t *testing.T) {
	file, secrets := authfiletest.Keys(t)
	a := authfiletest.Load(t, file)
	if got := strings.Join(a.Names(), ","); got != "app,root,team-a,viewer" {
		t.Errorf("Names() = %s, want app,root,team-a,viewer", got)
	}
	for name, sec := range secrets {
		if !strings.HasPrefix(sec, authfile.SecretPrefix) || strings.ContainsAny(sec, " \n") {
			t.Errorf("secret of %s = %q, want one token starting %s", name, sec, authfile.SecretPrefix)
		}
		if k := a.Lookup(sec); k == nil || k.Label() != name {
			t.Errorf("lookup(secret of %s) = %v, want key %s", name, k, name)
		}
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for name, sec := range secrets {
		if bytes.Contains(raw, []byte(sec)) || bytes.Contains(raw, []byte(sec[len(authfile.SecretPrefix)+2*authfile.KeyIDBytes+1:])) {
			t.Errorf("auth file holds the secret of %s", name)
		}
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("auth file mode = %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if _, err := authfile.AddKey(file, "app", authfile.RoleReader, nil); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("authfile.AddKey(duplicate name) = %v, want an error saying it exists", err)
	}
	if got := authfiletest.Load(t, file).Len(); got != 4 {
		t.Errorf("keys after refused duplicate = %d, want 4", got)
	}
}

func TestLookupRefusesNearMisses(t *testing.T) {
	file, secrets := authfiletest.Keys(t)
	a := authfiletest.Load(t, file)
	sec := secrets["app"]
	other := secrets["viewer"]
	flip := []byte(sec)
	flip[len(flip)-1] ^= 1
	for _, bad := range []string{
		"", "kvdb_", sec[:len(sec)-1], sec + "x", string(flip),
		// another key's id with this key's random part
		other[:len(authfile.SecretPrefix)+2*authfile.KeyIDBytes] + sec[len(authfile.SecretPrefix)+2*authfile.KeyIDBytes:],
		"kvdb_0000000000000000_" + sec[len(authfile.SecretPrefix)+2*authfile.KeyIDBytes+1:],
		strings.ToUpper(sec),
	} {
		if k := a.Lookup(bad); k != nil {
			t.Errorf("lookup(%q) = key %s, want none", bad, k.Label())
		}
	}
}

func TestAuthFileErrors(t *testing.T) {
	good := fmt.Sprintf("[[keys]]\nname = \"a\"\nid = \"%s\"\nrole = \"reader\"\nsalt = \"%s\"\nhash = \"%s\"\n",
		strings.Repeat("ab", authfile.KeyIDBytes), strings.Repeat("00", authfile.SaltBytes), strings.Repeat("11", 32))
	if _, err := authfile.ParseAuth([]byte(good)); err != nil {
		t.Fatalf("authfile.ParseAuth(good) = %v", err)
	}
	for name, text := range map[string]string{
		"unknown key":    good + "colour = \"red\"\n",
		"bad role":       strings.Replace(good, "reader", "owner", 1),
		"bad name":       strings.Replace(good, `name = "a"`, `name = "a b"`, 1),
		"bad id":         strings.Replace(good, strings.Repeat("ab", authfile.KeyIDBytes), "xyz", 1),
		"short hash":     strings.Replace(good, strings.Repeat("11", 32), "11", 1),
		"bad pattern":    good + "topics = [\"[\"]\n",
		"negative rate":  good + "rate_limit = -1\n",
		"duplicate name": good + strings.Replace(good, strings.Repeat("ab", authfile.KeyIDBytes), strings.Repeat("cd", authfile.KeyIDBytes), 1),
		"role limits":    "[role_rate_limits]\nowner = 3\n",
		"not toml":       "[[keys]\n",
	} {
		if _, err := authfile.ParseAuth([]byte(text)); err == nil {
			t.Errorf("authfile.ParseAuth(%s) = nil, want an error", name)
		}
	}
	if _, err := authfile.LoadAuthFile(filepath.Join(t.TempDir(), "none.toml")); err == nil {
		t.Errorf("authfile.LoadAuthFile(missing) = nil, want an error")
	}
}

func TestSecretIDIsHex(t *testing.T) {
	file, secrets := authfiletest.Keys(t)
	_ = file
	for name, sec := range secrets {
		id, ok := authfile.SecretID(sec)
		if _, err := hex.DecodeString(id); !ok || err != nil || len(id) != 2*authfile.KeyIDBytes {
			t.Errorf("authfile.SecretID(secret of %s) = %q, %v", name, id, ok)
		}
	}
}
