package langchaingo_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/client"
	"github.com/go-kvdb/go-kvdb/internal/proctest"
	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
)

// Bounds on waiting for the router process. They only turn a hang into a
// failure; no test asserts how fast anything is.
const (
	buildTimeout = 5 * time.Minute
	readyTimeout = 10 * time.Second
	stopTimeout  = 5 * time.Second
)

// routerBin is the router binary TestMain builds from the parent module.
var routerBin string

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kvdb-langchaingo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "langchaingo tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildRouter(dir); err != nil {
		fmt.Fprintln(os.Stderr, "langchaingo tests:", err)
		return 1
	}
	return m.Run()
}

// buildRouter compiles cmd/router of the parent module (two levels up)
// into dir, in that module, with its own go.sum: this module never
// depends on the router's packages.
func buildRouter(dir string) error {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "router")); err != nil {
		return fmt.Errorf("parent module: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	args := []string{"build", "-o", filepath.Join(dir, "router")}
	if raceEnabled() {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/router")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	routerBin = filepath.Join(dir, "router")
	return nil
}

func raceEnabled() bool {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// router is a running single-node router process.
type router struct {
	URL    string // http://127.0.0.1:port
	DB     string // its -db-location
	Ollama *ollamatest.Server
	Client *client.Client

	transport *http.Transport // Client's own, closed before a stop
	args      []string
	cmd       *exec.Cmd
	stderr    proctest.SyncBuffer
	done      chan struct{} // closed once the process has exited
}

// routerOpts say how to start a router.
type routerOpts struct {
	embed bool   // -embed-model=embed-a on a fake Ollama
	db    string // -db-location; empty: a new file in t.TempDir()
}

// startRouter starts a router in single-node mode on a free loopback port,
// with a fake Ollama behind it, and waits until it is ready. It is stopped
// (SIGTERM, then SIGKILL) when the test ends, and its log is printed if
// the test failed.
func startRouter(t testing.TB, o routerOpts) *router {
	t.Helper()
	if o.db == "" {
		o.db = filepath.Join(t.TempDir(), "kvdb.db")
	}
	r := &router{DB: o.db, Ollama: ollamatest.New(t), done: make(chan struct{})}
	// Port 0: the router binds a free port and logs it, so no other
	// process can take it between picking and binding.
	r.args = []string{"-http-addr=127.0.0.1:0", "-db-location=" + o.db, "-ollama-url=" + r.Ollama.URL, "-shutdown-grace=2s"}
	if o.embed {
		r.args = append(r.args, "-embed-model=embed-a")
	}
	r.cmd = exec.Command(routerBin, r.args...)
	r.cmd.Stderr, r.cmd.Stdout = &r.stderr, &r.stderr
	r.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start router: %v", err)
	}
	go func() {
		r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		r.Stop(t)
		if t.Failed() {
			t.Logf("--- router %s (exit status %d)\n%s", strings.Join(r.args, " "), r.cmd.ProcessState.ExitCode(), r.stderr.String())
		}
	})
	r.URL = "http://" + proctest.WaitServingAddr(t, "router", &r.stderr, r.done, readyTimeout)
	r.waitReady(t)
	r.transport = http.DefaultTransport.(*http.Transport).Clone()
	c, err := client.New(r.URL, client.WithHTTPClient(&http.Client{Transport: r.transport}))
	if err != nil {
		t.Fatalf("client.New(%q): %v", r.URL, err)
	}
	r.Client = c
	return r
}

// waitReady polls /readyz (the cluster map is installed in the background)
// until it answers 200.
func (r *router) waitReady(t testing.TB) {
	t.Helper()
	poll := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(readyTimeout)
	last := ""
	for {
		resp, err := poll.Get(r.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s/readyz: not 200 within %s (last: %s)", r.URL, readyTimeout, last)
		}
		select {
		case <-r.done:
			t.Fatalf("router exited before %s/readyz answered:\n%s", r.URL, r.stderr.String())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// Stop stops the router with SIGTERM (SIGKILL after stopTimeout) and waits
// for it to exit; a router that does not exit 0 fails the test.
func (r *router) Stop(t testing.TB) {
	t.Helper()
	select {
	case <-r.done:
		return
	default:
	}
	// A connection the transport dialed for a request that another one
	// then served stays open, unused: net/http's Shutdown counts such a
	// connection as busy for 5 s, longer than the grace given here.
	if r.transport != nil {
		r.transport.CloseIdleConnections()
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
		if code := r.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("router exit status after SIGTERM = %d, want 0", code)
		}
	case <-time.After(stopTimeout):
		t.Errorf("router still running %s after SIGTERM; killing it", stopTimeout)
		r.cmd.Process.Kill()
		<-r.done
	}
}
