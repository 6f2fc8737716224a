package client_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/go-kvdb/go-kvdb/router"
	"github.com/go-kvdb/go-kvdb/storage"
)

// kvdbURL is the base URL of the router the examples and tests talk to:
// a real single-node router (router.New over a storage.Store in a
// temporary directory) behind an httptest server, with a fake Ollama for
// the LLM endpoints. In your program it is your router's URL, such as
// "http://127.0.0.1:8080".
var kvdbURL string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kvdb-client-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	tb := &mainTB{}
	defer tb.cleanup()
	stop, url, err := startRouter(tb, filepath.Join(dir, "kvdb.db"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer stop()
	kvdbURL = url
	return m.Run()
}

// startRouter starts a single-node router over a BoltDB file at path and
// returns its URL and how to stop it.
func startRouter(tb testing.TB, path string) (stop func(), url string, err error) {
	st, err := storage.Open(path, storage.Options{NoSync: true})
	if err != nil {
		return nil, "", err
	}
	fake := ollamatest.New(tb)
	llm, err := llmbridge.New(fake.URL, llmbridge.Options{})
	if err != nil {
		st.Close()
		return nil, "", err
	}
	rt, err := router.New(router.Config{
		Mode:         "single",
		Nodes:        []router.Node{{Name: "local", Address: path, Shard: st}},
		CacheBytes:   8 << 20,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		LLM:          router.LLMConfig{Client: llm, ChatModel: "chat-model", EmbedModel: "embed-a"},
		ShardTimeout: 10 * time.Second,
	})
	if err != nil {
		st.Close()
		return nil, "", err
	}
	srv := httptest.NewServer(rt.Handler())
	// The cluster map is installed in the background: wait for it.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		resp, err := srv.Client().Get(srv.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
	}
	return func() {
		srv.Close()
		rt.Close()
		st.Close()
	}, srv.URL, nil
}

// mainTB is the testing.TB the fake Ollama wants, for TestMain, which has
// none: failures go to stderr and make the run fail.
type mainTB struct {
	testing.TB // not used: every method the fake calls is below
	cleanups   []func()
}

func (t *mainTB) Helper()                           {}
func (t *mainTB) Cleanup(f func())                  { t.cleanups = append(t.cleanups, f) }
func (t *mainTB) Logf(format string, args ...any)   { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (t *mainTB) Errorf(format string, args ...any) { t.Logf(format, args...); os.Exit(1) }
func (t *mainTB) Fatalf(format string, args ...any) { t.Errorf(format, args...) }
func (t *mainTB) Name() string                      { return "TestMain" }

func (t *mainTB) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}
