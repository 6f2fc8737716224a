package e2e

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
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Bounds on waiting for the processes. They only turn a hang into a failure;
// no test asserts how fast anything is.
const (
	buildTimeout = 5 * time.Minute  // go build of both binaries, cold cache included
	readyTimeout = 10 * time.Second // from start until GET /healthz answers 200
	// stopTimeout is from SIGTERM until exit, before SIGKILL: past the
	// daemons' default -shutdown-grace (10 s), which a clean stop may use.
	// net/http's Shutdown counts a connection that has sent nothing yet as
	// busy for 5 s, so a stop while a peer is frozen (SIGSTOP) just after
	// dialing takes that long (TestGapEmptiesTheCache).
	stopTimeout = 12 * time.Second
	exitTimeout = 15 * time.Second // for a process expected to fail on its own
)

// bin holds the paths of the binaries TestMain builds.
var bin struct{ router, storaged string }

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kvdb-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// build compiles cmd/router and cmd/storaged into dir. The test runs in
// <module>/e2e, so the module root is "..".
func build(dir string) error {
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return fmt.Errorf("module root: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled() {
		// The daemons then report their own data races (and exit 66, which
		// a clean stop refuses), and the build reuses the packages that
		// `go test -race ./...` compiles for the other tests anyway.
		args = append(args, "-race")
	}
	args = append(args, "./cmd/router", "./cmd/storaged")
	// `go test` puts its own GOROOT/bin first in PATH, so this is the same
	// toolchain that builds the test.
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	bin.router = filepath.Join(dir, "router")
	bin.storaged = filepath.Join(dir, "storaged")
	return nil
}

// raceEnabled reports whether the test binary was built with -race.
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

// ---- processes ----

// syncBuffer collects a process's output (see proctest).
type syncBuffer = proctest.SyncBuffer

// proc is a running binary.
type proc struct {
	name   string
	args   []string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{} // closed once the process has exited and cmd.Wait returned
}

// start runs path with args. When the test ends the process is stopped
// (SIGTERM, bounded wait, SIGKILL), and if the test failed its output is
// logged.
func start(t testing.TB, name, path string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, args: args, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	// A -race binary sleeps a second before it exits (atexit_sleep_ms);
	// the tests stop dozens of processes one after another. A GORACE of
	// the caller's still applies: later options win.
	p.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("--- %s %s (exit status %d)\nstderr:\n%sstdout:\n%s",
				p.name, strings.Join(p.args, " "), p.exitCode(), p.stderr.String(), p.stdout.String())
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode is the exit status, -1 if the process died of a signal or is
// still running.
func (p *proc) exitCode() int {
	if !p.exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// stop sends SIGTERM, waits up to stopTimeout, then kills the process, and
// returns its exit status (-1 when it had to be killed). A process that
// ignores SIGTERM fails the test.
func (p *proc) stop(t testing.TB) int {
	t.Helper()
	if p.exited() {
		return p.exitCode()
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		t.Errorf("%s still running %s after SIGTERM; killing it", p.name, stopTimeout)
		p.kill(t)
	}
	return p.exitCode()
}

// signal sends sig (SIGSTOP, SIGCONT, SIGHUP…) to a running process.
func (p *proc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("send %s to %s: %v", sig, p.name, err)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill(t testing.TB) {
	t.Helper()
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		t.Fatalf("%s still running %s after SIGKILL", p.name, stopTimeout)
	}
}

// wait waits up to d for the process to exit on its own and returns its
// status; if it does not, the test fails and the process is killed.
func (p *proc) wait(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.exitCode()
	case <-time.After(d):
		p.kill(t)
		t.Fatalf("%s still running after %s, want it to exit", p.name, d)
		return -1
	}
}

// stopClean stops p with SIGTERM and fails the test unless it exits 0.
func (p *proc) stopClean(t testing.TB) {
	t.Helper()
	if code := p.stop(t); code != 0 {
		t.Errorf("%s exit status after SIGTERM = %d, want 0", p.name, code)
	}
}

// waitHealthy polls baseURL/healthz until it answers 200, the process exits,
// or readyTimeout passes.
func waitHealthy(t testing.TB, p *proc, baseURL string) {
	t.Helper()
	poll := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(readyTimeout)
	var last string
	for {
		resp, err := poll.Get(baseURL + "/healthz")
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
			t.Fatalf("GET %s/healthz: not 200 within %s (last: %s)", baseURL, readyTimeout, last)
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited with status %d before %s/healthz answered", p.name, p.exitCode(), baseURL)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// eventually calls cond every 25 ms until it returns true or d passes, and
// reports whether it did. It is for state the processes learn in the
// background (a router's health probes), not for timing anything.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(25 * time.Millisecond)
	}
	return true
}

// waitStatus polls GET url until it answers want, for up to readyTimeout,
// and returns the last answer; if want never came, the test fails.
func waitStatus(t testing.TB, url string, want int) reply {
	t.Helper()
	var r reply
	if !eventually(readyTimeout, func() bool {
		r = do(t, "GET", url, nil)
		return r.Status == want
	}) {
		t.Errorf("%s = %d, want %d within %s; body: %s", r.Req, r.Status, want, readyTimeout, r.Raw)
	}
	return r
}

// listenAny is the -http-addr of a daemon started afresh: the kernel picks
// a free port as the daemon binds it, and boundAddr reads which from its
// log. A port picked by the test and passed on could be taken by another
// process (the packages' tests run in parallel) before the daemon binds it.
const listenAny = "127.0.0.1:0"

// boundAddr waits until p, started with -http-addr=listenAny, logs the
// address it serves on, and returns it.
func boundAddr(t testing.TB, p *proc) string {
	t.Helper()
	return proctest.WaitServingAddr(t, p.name, &p.stderr, p.done, readyTimeout)
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---- a cluster: storage daemons behind a router ----

type shard struct {
	name, addr, db string
	proc           *proc
}

func (s *shard) url(path string) string { return "http://" + s.addr + path }

type cluster struct {
	dir        string // holds sharding.toml and data/
	configFile string // "" until the shards first started
	replicas   int    // the config's replicas; 0 leaves the key out
	routerAddr string // "" until the router first served
	routerArgs []string
	shardArgs  []string // added to every storage daemon's flags
	shards     []*shard // what the config file lists
	router     *proc
}

// url is the router's URL for path.
func (c *cluster) url(path string) string { return "http://" + c.routerAddr + path }

// startCluster starts n storage daemons named sh-1…sh-n and a router over
// them, each on a port of its own choosing (listenAny), with a
// sharding.toml and data files in a temporary directory; routerArgs are
// added to the router's flags.
func startCluster(t testing.TB, n int, routerArgs ...string) *cluster {
	t.Helper()
	return startReplicated(t, n, 0, routerArgs...)
}

// startReplicated is startCluster with `replicas = replicas` in the config
// (0 leaves it out: one replica).
func startReplicated(t testing.TB, n, replicas int, routerArgs ...string) *cluster {
	t.Helper()
	return startShardArgs(t, n, replicas, nil, routerArgs...)
}

// startShardArgs is startReplicated with shardArgs added to every storage
// daemon's flags, restarts included.
func startShardArgs(t testing.TB, n, replicas int, shardArgs []string, routerArgs ...string) *cluster {
	t.Helper()
	c := &cluster{dir: t.TempDir(), replicas: replicas, routerArgs: routerArgs, shardArgs: shardArgs}
	for i := range n {
		c.shards = append(c.shards, c.newShard(i+1))
	}
	c.start(t)
	return c
}

// newShard is shard sh-<i>, not started yet: it has no address.
func (c *cluster) newShard(i int) *shard {
	name := fmt.Sprintf("sh-%d", i)
	return &shard{name: name, db: filepath.Join(c.dir, "data", name+".db")}
}

// writeConfig (re)writes sharding.toml from c.replicas and c.shards. It
// writes a temporary file and renames it, so a reader never sees half.
func (c *cluster) writeConfig(t testing.TB) {
	t.Helper()
	var cfg strings.Builder
	if c.replicas > 0 {
		fmt.Fprintf(&cfg, "replicas = %d\n\n", c.replicas)
	}
	for i, s := range c.shards {
		fmt.Fprintf(&cfg, "[[shards]]\nname = %q\nidx = %d\naddress = %q\n\n", s.name, i, s.addr)
	}
	tmp := writeFile(t, c.dir, "sharding.toml.tmp", cfg.String())
	c.configFile = filepath.Join(c.dir, "sharding.toml")
	if err := os.Rename(tmp, c.configFile); err != nil {
		t.Fatal(err)
	}
}

// addShard starts one more storage daemon (sh-<n+1>) and, once it serves,
// adds it to the config file; the router learns of it on SIGHUP.
func (c *cluster) addShard(t testing.TB) *shard {
	t.Helper()
	s := c.newShard(len(c.shards) + 1)
	c.startShard(t, s)
	c.shards = append(c.shards, s)
	c.writeConfig(t)
	return s
}

// start starts every storage daemon, then the router, and waits until all
// are healthy. Each that ran before gets its port and data file again; on
// the first start, the config file is written once the shards serve.
func (c *cluster) start(t testing.TB) {
	t.Helper()
	for _, s := range c.shards {
		s.proc = c.startStoraged(t, s)
	}
	for _, s := range c.shards {
		waitHealthy(t, s.proc, s.url(""))
	}
	if c.configFile == "" {
		c.writeConfig(t)
	}
	c.startRouter(t)
}

// startRouter starts the router on the current config file, on its port
// (a port of its own the first time), and waits until it is healthy.
func (c *cluster) startRouter(t testing.TB) {
	t.Helper()
	addr := c.routerAddr
	if addr == "" {
		addr = listenAny
	}
	args := append([]string{"-config-file=" + c.configFile, "-http-addr=" + addr}, c.routerArgs...)
	c.router = start(t, "router", bin.router, args...)
	if c.routerAddr == "" {
		c.routerAddr = boundAddr(t, c.router)
	}
	waitHealthy(t, c.router, c.url(""))
}

// startShard (re)starts one storage daemon and waits until it is healthy.
func (c *cluster) startShard(t testing.TB, s *shard) {
	t.Helper()
	s.proc = c.startStoraged(t, s)
	waitHealthy(t, s.proc, s.url(""))
}

// startStoraged starts s's storage daemon, without waiting for it to be
// healthy. A shard that ran before serves at its address in the config
// file again; a new one, not in the file yet, on a port of its own, which
// becomes s.addr.
func (c *cluster) startStoraged(t testing.TB, s *shard) *proc {
	t.Helper()
	if s.addr != "" {
		args := append([]string{"-db-location=" + s.db, "-config-file=" + c.configFile, "-shard=" + s.name}, c.shardArgs...)
		return start(t, "storaged "+s.name, bin.storaged, args...)
	}
	args := append([]string{"-db-location=" + s.db, "-http-addr=" + listenAny}, c.shardArgs...)
	p := start(t, "storaged "+s.name, bin.storaged, args...)
	s.addr = boundAddr(t, p)
	return p
}

// stop stops the router, then the storage daemons, with SIGTERM, and fails
// the test unless each exits 0.
func (c *cluster) stop(t testing.TB) {
	t.Helper()
	c.router.stopClean(t)
	for _, s := range c.shards {
		s.proc.stopClean(t)
	}
}

// startSingle starts a router in single-node mode on dbPath and a port of
// its own, waits until it is healthy and returns it with its base URL.
func startSingle(t testing.TB, dbPath string, args ...string) (*proc, string) {
	t.Helper()
	args = append([]string{"-db-location=" + dbPath, "-http-addr=" + listenAny}, args...)
	p := start(t, "router (single-node)", bin.router, args...)
	base := "http://" + boundAddr(t, p)
	waitHealthy(t, p, base)
	return p, base
}

// ---- HTTP ----

var httpClient = &http.Client{Timeout: 20 * time.Second}

// reply is an HTTP answer.
type reply struct {
	Req    string // "METHOD /path?query", for failure messages
	Status int
	Header http.Header
	Body   map[string]any // the decoded JSON object; nil unless the answer is JSON
	Raw    []byte
}

// do sends a request and returns the answer. body is nil (no body), a
// []byte or string (sent as is), an io.Reader (sent with unknown length,
// i.e. chunked) or a value to encode as JSON. Writes are sent as
// application/json; header holds name, value pairs that are set on the
// request and may override that.
func do(t testing.TB, method, url string, body any, header ...string) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	case io.Reader:
		rd = struct{ io.Reader }{b} // hide the length: the client sends it chunked
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encode request body %T: %v", body, err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if len(header)%2 != 0 {
		t.Fatalf("do: header %q is not name, value pairs", header)
	}
	for i := 0; i < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	r := reply{Req: method + " " + req.URL.RequestURI()}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", r.Req, err)
	}
	defer resp.Body.Close()
	r.Status, r.Header = resp.StatusCode, resp.Header
	if r.Raw, err = io.ReadAll(resp.Body); err != nil {
		t.Fatalf("%s: read answer: %v", r.Req, err)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && len(r.Raw) > 0 {
		if err := json.Unmarshal(r.Raw, &r.Body); err != nil {
			t.Errorf("%s: answer is not a JSON object: %v\n%s", r.Req, err, r.Raw)
		}
	}
	return r
}

// decode unmarshals a reply's raw body into a T.
func decode[T any](t testing.TB, r reply) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.Raw, &v); err != nil {
		t.Fatalf("%s: decode answer as %T: %v\n%s", r.Req, v, err, r.Raw)
	}
	return v
}

// wantStatus reports whether r has the status want, failing the test (but
// not stopping it) if not.
func wantStatus(t testing.TB, r reply, want int) bool {
	t.Helper()
	if r.Status != want {
		t.Errorf("%s = %d, want %d; body: %s", r.Req, r.Status, want, r.Raw)
		return false
	}
	return true
}

// mustStatus stops the test unless r has the status want.
func mustStatus(t testing.TB, r reply, want int) {
	t.Helper()
	if !wantStatus(t, r, want) {
		t.FailNow()
	}
}

// wantError checks that r is the API's error answer: status, the body
// {"error":{"code":code,"message":…}} with a non-empty message containing
// each of substrs.
func wantError(t testing.TB, r reply, status int, code string, substrs ...string) {
	t.Helper()
	if !wantStatus(t, r, status) {
		return
	}
	e, ok := r.Body["error"].(map[string]any)
	if !ok || len(r.Body) != 1 {
		t.Errorf(`%s: body = %s, want {"error":{…}}`, r.Req, r.Raw)
		return
	}
	if got := e["code"]; got != code {
		t.Errorf("%s: error code = %v, want %q", r.Req, got, code)
	}
	msg, _ := e["message"].(string)
	if msg == "" {
		t.Errorf("%s: error message is empty; body: %s", r.Req, r.Raw)
	}
	for _, s := range substrs {
		if !strings.Contains(msg, s) {
			t.Errorf("%s: error message %q does not contain %q", r.Req, msg, s)
		}
	}
}

// field walks decoded JSON objects along path; nil if any step is missing.
func field(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// ---- API shapes ----

type topic struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	CreatedAt   string `json:"created_at"`
}

type topicList struct {
	Topics     []topic `json:"topics"`
	NextCursor string  `json:"next_cursor"`
}

type metadata struct {
	ID        string   `json:"id"`
	CreatedAt string   `json:"created_at"`
	UpdatedAt string   `json:"updated_at"`
	Model     string   `json:"model"`
	Tags      []string `json:"tags"`
}

type content struct {
	Text       string    `json:"text"`
	Embeddings []float64 `json:"embeddings"`
}

// document is a context. Content is a pointer so a list without
// include=content can be told from one with empty content.
type document struct {
	Metadata metadata `json:"metadata"`
	Content  *content `json:"content"`
}

type contextList struct {
	Contexts   []document `json:"contexts"`
	NextCursor string     `json:"next_cursor"`
}

// createTopic creates a topic through baseURL and fails the test unless it
// answers 201.
func createTopic(t testing.TB, baseURL, name string) {
	t.Helper()
	mustStatus(t, do(t, "POST", baseURL+"/api/v1/topics", map[string]string{"name": name}), http.StatusCreated)
}

// putContext stores a context with PUT and fails the test unless it answers
// 200 or 201; it returns the ETag.
func putContext(t testing.TB, baseURL, topicName, id string, doc any) string {
	t.Helper()
	r := do(t, "PUT", baseURL+"/api/v1/topics/"+topicName+"/contexts/"+id, doc)
	if r.Status != http.StatusCreated && r.Status != http.StatusOK {
		t.Fatalf("%s = %d, want 201 or 200; body: %s", r.Req, r.Status, r.Raw)
	}
	return r.Header.Get("ETag")
}

// listAllContexts pages through a topic's contexts with limit and returns
// every page's items in order; query is appended to each request.
func listAllContexts(t testing.TB, baseURL, topicName string, limit int, query string) []document {
	t.Helper()
	var all []document
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("listing %s did not end after 1000 pages", topicName)
		}
		u := fmt.Sprintf("%s/api/v1/topics/%s/contexts?limit=%d%s", baseURL, topicName, limit, query)
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		r := do(t, "GET", u, nil)
		mustStatus(t, r, http.StatusOK)
		page := decode[contextList](t, r)
		if len(page.Contexts) > limit {
			t.Fatalf("%s returned %d contexts, want at most %d", r.Req, len(page.Contexts), limit)
		}
		all = append(all, page.Contexts...)
		if page.NextCursor == "" {
			return all
		}
		if len(page.Contexts) == 0 {
			t.Fatalf("%s returned no contexts but next_cursor %q", r.Req, page.NextCursor)
		}
		cursor = page.NextCursor
	}
}

func ids(docs []document) []string {
	out := make([]string, len(docs))
	for i, d := range docs {
		out[i] = d.Metadata.ID
	}
	return out
}
