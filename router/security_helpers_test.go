package router

import (
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// newSecureCluster is newTestCluster with the Config adjusted by mod
// before the router starts (security settings, mostly).
func newSecureCluster(t testing.TB, shards int, mod func(*Config)) *testCluster {
	t.Helper()
	tc := &testCluster{reg: prometheus.NewRegistry()}
	for range shards {
		tc.want = append(tc.want, tc.addShard(t))
	}
	cfg := Config{
		Nodes:          tc.want,
		CacheBytes:     64 << 20,
		RepairInterval: time.Hour,
		Registry:       tc.reg,
	}
	if mod != nil {
		mod(&cfg)
	}
	tc.router = tc.newRouter(t, cfg)
	srv := httptest.NewServer(tc.router.Handler())
	t.Cleanup(srv.Close)
	tc.URL = srv.URL
	waitFor(t, "cluster map installed", func() bool { return tc.router.topo.Load().Epoch > 0 })
	return tc
}

// testKeys writes an auth file with one key per role (and one limited to
// topics team-a-*) and returns it with their secrets by name.
func testKeys(t testing.TB) (string, map[string]string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "auth.toml")
	secrets := map[string]string{}
	for _, k := range []struct {
		name   string
		role   Role
		topics []string
	}{
		{"root", RoleAdmin, nil},
		{"app", RoleWriter, nil},
		{"viewer", RoleReader, nil},
		{"team-a", RoleWriter, []string{"team-a-*"}},
	} {
		sec, err := AddKey(file, k.name, k.role, k.topics)
		if err != nil {
			t.Fatalf("AddKey(%s): %v", k.name, err)
		}
		secrets[k.name] = sec
	}
	return file, secrets
}

func loadAuth(t testing.TB, file string) *Auth {
	t.Helper()
	a, err := LoadAuthFile(file)
	if err != nil {
		t.Fatalf("LoadAuthFile: %v", err)
	}
	return a
}

func bearerHeader(secret string) []string { return []string{"Authorization", "Bearer " + secret} }
