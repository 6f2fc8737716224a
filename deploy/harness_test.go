package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/go-kvdb/go-kvdb/internal/proctest"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds that turn a hang into a failure; no test asserts a duration.
const (
	buildTimeout = 5 * time.Minute
	readyTimeout = 15 * time.Second
	stopTimeout  = 5 * time.Second
)

// moduleRoot is the repository root: the tests run in <root>/deploy.
func moduleRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	return root
}

var built struct {
	once     sync.Once
	dir      string
	err      error
	router   string
	storaged string
}

// binaries builds cmd/router and cmd/storaged once per test binary.
func binaries(t testing.TB) (router, storaged string) {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "kvdb-deploy-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), "./cmd/router", "./cmd/storaged")
		cmd.Dir = moduleRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		built.router, built.storaged = filepath.Join(dir, "router"), filepath.Join(dir, "storaged")
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.router, built.storaged
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// syncBuffer collects a process's output (see proctest).
type syncBuffer = proctest.SyncBuffer

// proc is a running process, stopped when the test ends (SIGTERM, a
// bounded wait, SIGKILL); its output is logged if the test failed.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{}
}

func start(t testing.TB, name, path string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("---- %s %s\n%s", name, strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// listenAny is the -http-addr of every daemon: the kernel picks a free
// port as the daemon binds it, and servingAddr reads which from its log.
// A port picked by the test and passed on could be taken by another
// process before the daemon binds it.
const listenAny = "127.0.0.1:0"

// freeAddrs returns n distinct free loopback addresses (see proctest), for
// the processes that do not say which port they bound (Docker, Prometheus).
var freeAddrs = proctest.FreeAddrs

// servingAddr waits until p logs the address it serves on and returns it.
func servingAddr(t testing.TB, p *proc) string {
	t.Helper()
	return proctest.WaitServingAddr(t, p.name, &p.out, p.done, readyTimeout)
}

// waitOK polls url until it answers 200, or fails the test.
func waitOK(t testing.TB, p *proc, url string) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before %s answered 200", p.name, url)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s never answered 200", p.name, url)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cluster is three storaged and a router with replicas = 3, processes on
// loopback, stopped when the test ends.
type cluster struct {
	router string   // the router's address
	shards []string // the storage daemons' addresses
	base   string   // the router's URL
}

func startCluster(t testing.TB) cluster {
	t.Helper()
	router, storaged := binaries(t)
	dir := t.TempDir()
	var c cluster
	for i := range 3 {
		p := start(t, fmt.Sprintf("storaged sh-%d", i+1), storaged,
			"-db-location="+filepath.Join(dir, fmt.Sprintf("sh-%d.db", i+1)), "-http-addr="+listenAny)
		a := servingAddr(t, p)
		waitOK(t, p, "http://"+a+"/healthz")
		c.shards = append(c.shards, a)
	}

	var toml strings.Builder
	toml.WriteString("replicas = 3\n")
	for i, a := range c.shards {
		fmt.Fprintf(&toml, "\n[[shards]]\nname = \"sh-%d\"\nidx = %d\naddress = %q\n", i+1, i, a)
	}
	config := filepath.Join(dir, "sharding.toml")
	if err := os.WriteFile(config, []byte(toml.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	rp := start(t, "router", router, "-config-file="+config, "-http-addr="+listenAny, "-cache-size=16777216")
	c.router = servingAddr(t, rp)
	c.base = "http://" + c.router
	waitOK(t, rp, c.base+"/readyz")
	return c
}

// send makes one request with a JSON body (nil: none) and returns the
// status and body; a transport error is status 0.
func send(client *http.Client, method, url string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}
