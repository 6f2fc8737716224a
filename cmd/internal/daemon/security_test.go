package daemon

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:1": true, "[::1]:80": true, "127.9.9.9:1": true,
		":8080": false, "0.0.0.0:8080": false, "[::]:1": false, "10.0.0.1:80": false,
		"example.com:80": false, "nonsense": false,
	} {
		if got := Loopback(addr); got != want {
			t.Errorf("Loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestClusterToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	os.WriteFile(file, []byte("  from-the-file-0123456789  \nsecond line\n"), 0o600)
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("abc"), 0o600)

	t.Setenv(TokenEnv, "from-the-environment-0123")
	if tok, err := ClusterToken(""); err != nil || tok != "from-the-environment-0123" {
		t.Errorf("ClusterToken(\"\") = %q, %v; want the environment's", tok, err)
	}
	if tok, err := ClusterToken(file); err != nil || tok != "from-the-file-0123456789" {
		t.Errorf("ClusterToken(file) = %q, %v; want the file's first line", tok, err)
	}
	for _, f := range []string{short, filepath.Join(dir, "missing")} {
		if _, err := ClusterToken(f); err == nil {
			t.Errorf("ClusterToken(%s) = nil, want an error", f)
		}
	}
	t.Setenv(TokenEnv, "")
	if tok, err := ClusterToken(""); err != nil || tok != "" {
		t.Errorf("ClusterToken without one = %q, %v; want none", tok, err)
	}
}
