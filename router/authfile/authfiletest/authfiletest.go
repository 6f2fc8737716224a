// Package authfiletest makes auth files for tests: one key per role, with
// their secrets.
package authfiletest

import (
	"path/filepath"
	"testing"

	"github.com/go-kvdb/go-kvdb/router/authfile"
)

// Keys writes an auth file with one key per role (and one limited to
// topics team-a-*) and returns it with their secrets by name.
func Keys(t testing.TB) (string, map[string]string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "auth.toml")
	secrets := map[string]string{}
	for _, k := range []struct {
		name   string
		role   authfile.Role
		topics []string
	}{
		{"root", authfile.RoleAdmin, nil},
		{"app", authfile.RoleWriter, nil},
		{"viewer", authfile.RoleReader, nil},
		{"team-a", authfile.RoleWriter, []string{"team-a-*"}},
	} {
		sec, err := authfile.AddKey(file, k.name, k.role, k.topics)
		if err != nil {
			t.Fatalf("authfile.AddKey(%s): %v", k.name, err)
		}
		secrets[k.name] = sec
	}
	return file, secrets
}

// Load reads an auth file or fails the test.
func Load(t testing.TB, file string) *authfile.Auth {
	t.Helper()
	a, err := authfile.LoadAuthFile(file)
	if err != nil {
		t.Fatalf("authfile.LoadAuthFile: %v", err)
	}
	return a
}
