package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/storage"
	bolt "go.etcd.io/bbolt"
)

// The tests of replication, health and rebalancing (README "Replication
// and rebalancing"). They run real storage daemons behind a real router,
// kill, hang, add and remove daemons under a client load, and check what
// the clients were told against what the cluster holds afterwards. The
// figures they log (keys moved, throughput, detection and repair times)
// are measurements for the record, never assertions.

// clusterTimeout bounds waiting for the router's background work: a shard
// marked down or up, a rebalance or a repair finishing. It only turns a
// hang into a failure.
const clusterTimeout = 30 * time.Second

// ---- HTTP from load goroutines ----

// loadClient keeps enough idle connections for the concurrent load
// goroutines, so they do not open a connection per request.
var loadClient = func() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{Timeout: 20 * time.Second, Transport: tr}
}()

// send is do for goroutines other than the test's: a transport error is
// returned, not fatal. body is JSON or nil.
func send(method, url string, body []byte) (reply, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return reply{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	r := reply{Req: method + " " + req.URL.RequestURI()}
	resp, err := loadClient.Do(req)
	if err != nil {
		return r, fmt.Errorf("%s: %w", r.Req, err)
	}
	defer resp.Body.Close()
	r.Status, r.Header = resp.StatusCode, resp.Header
	if r.Raw, err = io.ReadAll(resp.Body); err != nil {
		return r, fmt.Errorf("%s: read answer: %w", r.Req, err)
	}
	return r, nil
}

// textDoc is a context whose content is text.
func textDoc(text string) []byte {
	b, _ := json.Marshal(map[string]any{"content": map[string]string{"text": text}})
	return b
}

// docText is the content text of a GET answer ("" if it has none).
func docText(r reply) string {
	var d document
	if json.Unmarshal(r.Raw, &d) != nil || d.Content == nil {
		return ""
	}
	return d.Content.Text
}

// version is the version an answer's ETag names (0 if it has none).
func version(r reply) uint64 {
	v, err := strconv.ParseUint(strings.Trim(r.Header.Get("ETag"), `"`), 16, 64)
	if err != nil {
		return 0
	}
	return v
}

// ctxURL is the router URL of a context.
func ctxURL(c *cluster, topicName, id string) string {
	return c.url("/api/v1/topics/" + topicName + "/contexts/" + id)
}

// populate PUTs the contexts text(0)…text(n-1) under ids id(i) with a few
// goroutines, failing the test on any answer but 200 or 201.
func populate(t testing.TB, c *cluster, topicName string, n int, id, text func(int) string) {
	t.Helper()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && !t.Failed(); i = int(next.Add(1) - 1) {
				r, err := send("PUT", ctxURL(c, topicName, id(i)), textDoc(text(i)))
				switch {
				case err != nil:
					t.Errorf("populate: %v", err)
				case r.Status != http.StatusCreated && r.Status != http.StatusOK:
					t.Errorf("populate: %s = %d, want 201 or 200; body: %s", r.Req, r.Status, r.Raw)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("populate: %d PUTs in %s", n, time.Since(start).Round(time.Millisecond))
}

// checkAll reads every context of want (id → text) through the router and
// fails the test for each that does not answer 200 with its text.
func checkAll(t testing.TB, c *cluster, topicName string, want map[string]string) {
	t.Helper()
	ids := slices.Sorted(maps.Keys(want))
	var next atomic.Int64
	var bad atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(ids); i = int(next.Add(1) - 1) {
				r, err := send("GET", ctxURL(c, topicName, ids[i]), nil)
				switch {
				case err != nil:
					t.Errorf("%v", err)
				case r.Status != http.StatusOK:
					t.Errorf("%s = %d, want 200; body: %s", r.Req, r.Status, r.Raw)
				case docText(r) != want[ids[i]]:
					t.Errorf("%s = %s, want text %q", r.Req, r.Raw, want[ids[i]])
				default:
					continue
				}
				if bad.Add(1) >= 20 {
					t.Errorf("more than 20 contexts of %d do not read back; giving up", len(ids))
					return
				}
			}
		})
	}
	wg.Wait()
}

// ---- the cluster view ----

// clusterView is GET /api/v1/cluster.
type clusterView struct {
	Epoch     uint64    `json:"epoch"`
	State     string    `json:"state"`
	Replicas  int       `json:"replicas"`
	Rebalance *syncView `json:"rebalance"`
	Repair    *syncView `json:"repair"`
	Shards    []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"shards"`
}

// syncView is the progress of a rebalance or a repair.
type syncView struct {
	Phase       string     `json:"phase"`
	Running     bool       `json:"running"`
	StartedAt   time.Time  `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	KeysScanned int64      `json:"keys_scanned"`
	KeysCopied  int64      `json:"keys_copied"`
	BytesCopied int64      `json:"bytes_copied"`
	KeysPurged  int64      `json:"keys_purged"`
	KeysMissing int64      `json:"keys_missing"`
	Errors      int64      `json:"errors"`
	LastError   string     `json:"last_error"`
}

func (v clusterView) shardState(name string) string {
	for _, s := range v.Shards {
		if s.Name == name {
			return s.State
		}
	}
	return ""
}

func (v clusterView) shardNames() []string {
	var out []string
	for _, s := range v.Shards {
		out = append(out, s.Name)
	}
	return out
}

func getCluster(t testing.TB, c *cluster) clusterView {
	t.Helper()
	r := do(t, "GET", c.url("/api/v1/cluster"), nil)
	mustStatus(t, r, http.StatusOK)
	return decode[clusterView](t, r)
}

// waitCluster polls /api/v1/cluster until cond holds and returns that
// view; after clusterTimeout the test stops, naming what it waited for.
func waitCluster(t testing.TB, c *cluster, what string, cond func(clusterView) bool) clusterView {
	t.Helper()
	var v clusterView
	if !eventually(clusterTimeout, func() bool { v = getCluster(t, c); return cond(v) }) {
		t.Fatalf("GET /api/v1/cluster: not %s within %s; last: %+v", what, clusterTimeout, v)
	}
	return v
}

// waitShardState waits until the router shows shard name in state.
func waitShardState(t testing.TB, c *cluster, name, state string) {
	t.Helper()
	waitCluster(t, c, name+" "+state, func(v clusterView) bool { return v.shardState(name) == state })
}

// waitStable waits until the router shows a stable cluster of the shards
// named, at an epoch after epoch, and returns that view.
func waitStable(t testing.TB, c *cluster, after uint64, shards ...string) clusterView {
	t.Helper()
	return waitCluster(t, c, fmt.Sprintf("stable over %v after epoch %d", shards, after), func(v clusterView) bool {
		return v.State == "stable" && v.Epoch > after && slices.Equal(v.shardNames(), shards)
	})
}

// ---- the shards' files ----

// stored is a record as a shard's BoltDB file holds it.
type stored struct {
	version   uint64
	tombstone bool
}

// readBucket opens a stopped storage daemon's BoltDB file read-only and
// returns the records of one bucket: key → version and tombstone flag.
func readBucket(t testing.TB, path, bucket string) map[string]stored {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer db.Close()
	out := map[string]stored{}
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			// version (8 bytes, big endian) | flags (bit 0: tombstone) | value
			if len(v) < 9 {
				return fmt.Errorf("key %q: record of %d bytes", k, len(v))
			}
			out[string(k)] = stored{binary.BigEndian.Uint64(v), v[8]&1 != 0}
			return nil
		})
	})
	if err != nil {
		t.Fatalf("read bucket %s of %s: %v", bucket, path, err)
	}
	return out
}

// ---- 1. a storage daemon killed under writes ----

// idLog is what clients were told about one context id. Only one goroutine
// writes a given id, one operation at a time, so its history is a sequence.
type idLog struct {
	exists  bool   // the last acknowledged operation was a PUT
	version uint64 // … at this version (its ETag)
	text    string // … with this text
	// pending are the operations after the last acknowledged one that
	// were not acknowledged (503, transport error): each may or may not
	// have been applied. A PUT is its text, a DELETE "".
	pending []string
}

// allows reports whether a GET answer is one the history permits, and
// if not, why.
func (l *idLog) allows(r reply) (bool, string) {
	switch r.Status {
	case http.StatusNotFound:
		if !l.exists || slices.Contains(l.pending, "") {
			return true, ""
		}
		return false, fmt.Sprintf("acknowledged PUT at version %x (%q) lost", l.version, l.text)
	case http.StatusOK:
		v, text := version(r), docText(r)
		switch {
		case l.exists && v == l.version && text == l.text:
			return true, ""
		case l.exists && v < l.version:
			return false, fmt.Sprintf("acknowledged PUT at version %x (%q) lost: read version %x", l.version, l.text, v)
		case (!l.exists || v > l.version) && text != "" && slices.Contains(l.pending, text):
			return true, "" // an unacknowledged PUT that did land
		case !l.exists:
			return false, fmt.Sprintf("acknowledged DELETE undone: read version %x %q", v, text)
		}
		return false, fmt.Sprintf("read version %x %q, want version %x %q or a later unacknowledged PUT", v, text, l.version, l.text)
	}
	return false, "want 200 or 404"
}

func TestKillStoragedUnderWrites(t *testing.T) {
	t.Parallel()
	c := startReplicated(t, 3, 3, "-cache-size=0")
	createTopic(t, c.url(""), "kill")
	const (
		ids     = 300
		workers = 4
		ops     = 2000
	)
	logs := make([]idLog, ids)
	id := func(i int) string { return fmt.Sprintf("k-%03d", i) }
	var done, acked, unavailable, transport atomic.Int64

	// Each worker owns the ids ≡ w (mod workers), so each id's operations
	// are sequential and "the last acknowledged one" is well defined.
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for n := 0; n < ops/workers; n++ {
				i := w + workers*rng.IntN(ids/workers)
				l := &logs[i]
				url := ctxURL(c, "kill", id(i))
				if rng.IntN(10) < 7 {
					text := fmt.Sprintf("%s op %d of worker %d", id(i), n, w)
					r, err := send("PUT", url, textDoc(text))
					switch {
					case err != nil:
						transport.Add(1)
						l.pending = append(l.pending, text)
					case r.Status == http.StatusOK || r.Status == http.StatusCreated:
						acked.Add(1)
						*l = idLog{exists: true, version: version(r), text: text}
					case r.Status == http.StatusServiceUnavailable:
						unavailable.Add(1)
						l.pending = append(l.pending, text)
					default:
						t.Errorf("%s = %d, want 200, 201 or 503; body: %s", r.Req, r.Status, r.Raw)
						l.pending = append(l.pending, text)
					}
				} else {
					r, err := send("DELETE", url, nil)
					switch {
					case err != nil:
						transport.Add(1)
						l.pending = append(l.pending, "")
					case r.Status == http.StatusNoContent:
						acked.Add(1)
						*l = idLog{}
					case r.Status == http.StatusNotFound:
						// The router found no live version at a quorum.
						if l.exists && !slices.Contains(l.pending, "") {
							t.Errorf("%s = 404, but PUT at version %x was acknowledged", r.Req, l.version)
						}
						acked.Add(1)
						*l = idLog{}
					case r.Status == http.StatusServiceUnavailable:
						unavailable.Add(1)
						l.pending = append(l.pending, "")
					default:
						t.Errorf("%s = %d, want 204, 404 or 503; body: %s", r.Req, r.Status, r.Raw)
						l.pending = append(l.pending, "")
					}
				}
				done.Add(1)
			}
		})
	}

	defer wg.Wait() // if the test stops early: the writers log to t

	// Kill sh-2 a quarter into the run, restart it on its file and port
	// at half-way; the writers never stop.
	victim := c.shards[1]
	waitOps := func(n int64) {
		for done.Load() < n {
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitOps(ops / 4)
	victim.proc.kill(t)
	killedAt, killedOps := time.Now(), done.Load()
	waitShardState(t, c, victim.name, "down")
	detect := time.Since(killedAt)
	waitOps(ops / 2)
	c.startShard(t, victim)
	restartedOps := done.Load()
	upAt := time.Now()
	waitShardState(t, c, victim.name, "up")
	t.Logf("SIGKILL %s after %d ops; router showed it down after %s; restarted after %d ops, shown up after %s",
		victim.name, killedOps, detect.Round(time.Millisecond), restartedOps, time.Since(upAt).Round(time.Millisecond))
	wg.Wait()
	if restartedOps >= ops {
		t.Errorf("the writers finished (%d ops) before %s was back; the run checks nothing after the restart", restartedOps, victim.name)
	}

	// Every acknowledged write reads back: a PUT at its version (or a
	// later unacknowledged one that landed), a DELETE as 404.
	lost := 0
	for i := range logs {
		r := do(t, "GET", ctxURL(c, "kill", id(i)), nil)
		if ok, why := logs[i].allows(r); !ok {
			lost++
			t.Errorf("%s = %d %s: %s", r.Req, r.Status, r.Raw, why)
		}
	}
	t.Logf("ops attempted %d, acknowledged %d, 503 %d, transport errors %d, lost %d",
		done.Load(), acked.Load(), unavailable.Load(), transport.Load(), lost)

	// The router repaired sh-2 when it saw it back; a repair asked for now
	// (which waits for that one) makes the three replicas identical.
	if auto := getCluster(t, c).Repair; auto != nil && auto.FinishedAt != nil {
		t.Logf("repair when %s came back: %s, %d keys scanned, %d copied", victim.name,
			auto.FinishedAt.Sub(auto.StartedAt).Round(time.Millisecond), auto.KeysScanned, auto.KeysCopied)
	}
	start := time.Now()
	r := do(t, "POST", c.url("/api/v1/admin/repair?wait=true"), nil)
	took := time.Since(start)
	mustStatus(t, r, http.StatusOK)
	rep := decode[struct{ Repair syncView }](t, r).Repair
	t.Logf("repair: %s, %d keys scanned, %d copied, %d missing", took.Round(time.Millisecond), rep.KeysScanned, rep.KeysCopied, rep.KeysMissing)
	if rep.KeysMissing != 0 {
		t.Errorf("repair with every shard up: keys_missing = %d, want 0", rep.KeysMissing)
	}
	c.stop(t)
	files := make([]map[string]stored, len(c.shards))
	for i, s := range c.shards {
		files[i] = readBucket(t, s.db, "contexts")
	}
	for i := 1; i < len(files); i++ {
		if !maps.Equal(files[i], files[0]) {
			diff := 0
			for k := range maps.Keys(files[0]) {
				if files[i][k] != files[0][k] {
					diff++
				}
			}
			t.Errorf("after repair, %s holds %d contexts, %s %d; %d of %s's differ",
				c.shards[0].name, len(files[0]), c.shards[i].name, len(files[i]), diff, c.shards[0].name)
		}
	}
}

// ---- 2. a hung storage daemon ----

func TestHungStoraged(t *testing.T) {
	t.Parallel()
	// A conditional write (DELETE) decided by the hung shard as the key's
	// primary waits for -shard-timeout before another owner decides.
	c := startReplicated(t, 3, 3, "-cache-size=0", "-shard-timeout=1s")
	const n = 40
	createTopic(t, c.url(""), "hung")
	id := func(i int) string { return fmt.Sprintf("h-%02d", i) }
	want := map[string]string{}
	populate(t, c, "hung", n, id, func(i int) string { return "hung " + id(i) })
	for i := range n {
		want[id(i)] = "hung " + id(i)
	}

	hung := c.shards[2]
	hung.proc.signal(t, syscall.SIGSTOP)
	// Before the SIGTERM of the process's own cleanup (cleanups run last
	// registered first): a stopped process does not act on SIGTERM.
	t.Cleanup(func() { hung.proc.cmd.Process.Signal(syscall.SIGCONT) })
	stoppedAt := time.Now()
	var detected atomic.Int64 // nanoseconds from SIGSTOP to "down"; 0 until then
	testDone := make(chan struct{})
	defer close(testDone)
	go func() {
		for time.Since(stoppedAt) < clusterTimeout {
			select {
			case <-testDone:
				return
			default:
			}
			if r, err := send("GET", c.url("/api/v1/cluster"), nil); err == nil {
				var v clusterView
				if json.Unmarshal(r.Raw, &v) == nil && v.shardState(hung.name) == "down" {
					detected.Store(int64(time.Since(stoppedAt)))
					return
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	// Every request answers 2xx, before and after the router notices.
	var slowest time.Duration
	requests := 0
	for round := 0; round < 4 || detected.Load() == 0; round++ {
		if time.Since(stoppedAt) > clusterTimeout {
			t.Fatalf("%s not shown down within %s", hung.name, clusterTimeout)
		}
		for i := range n {
			key := id(i)
			begin := time.Now()
			switch (i + round) % 4 {
			case 0, 1:
				r := do(t, "GET", ctxURL(c, "hung", key), nil)
				if wantStatus(t, r, http.StatusOK) && docText(r) != want[key] {
					t.Errorf("%s = %s, want text %q", r.Req, r.Raw, want[key])
				}
			case 2:
				text := fmt.Sprintf("hung %s round %d", key, round)
				r := do(t, "PUT", ctxURL(c, "hung", key), textDoc(text))
				if wantStatus(t, r, http.StatusOK) {
					want[key] = text
				}
			case 3:
				wantStatus(t, do(t, "DELETE", ctxURL(c, "hung", key), nil), http.StatusNoContent)
				r := do(t, "PUT", ctxURL(c, "hung", key), textDoc(want[key]))
				if r.Status != http.StatusCreated {
					t.Errorf("%s after DELETE = %d, want 201; body: %s", r.Req, r.Status, r.Raw)
				}
				requests++
			}
			requests++
			slowest = max(slowest, time.Since(begin))
		}
	}
	t.Logf("SIGSTOP %s: router showed it down after %s; %d requests meanwhile, slowest %s",
		hung.name, time.Duration(detected.Load()).Round(time.Millisecond), requests, slowest.Round(time.Millisecond))

	hung.proc.signal(t, syscall.SIGCONT)
	waitShardState(t, c, hung.name, "up")
	checkAll(t, c, "hung", want)
}

// ---- 3. growing and shrinking under load ----

// load counts what runLoad did.
type load struct {
	reads, writes atomic.Int64
	failures      atomic.Int64      // answers that failed the test; the load stops after 10
	mu            sync.Mutex        // guards added
	added         map[string]string // contexts written and acknowledged: id → text
}

// runLoad runs a load on c until stop is closed: readers GET the contexts
// of existing (id → text) and must get 200 with the text; one writer PUTs
// new contexts prefix-NNNNN, which must answer 201. Any other answer fails
// the test. Wait for the WaitGroup before reading the load.
func runLoad(t testing.TB, c *cluster, topicName string, existing map[string]string, prefix string, stop <-chan struct{}) (*load, *sync.WaitGroup) {
	ids := slices.Sorted(maps.Keys(existing))
	l := &load{added: map[string]string{}}
	var wg sync.WaitGroup
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return l.failures.Load() >= 10
		}
	}
	for g := range 3 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 2))
			for !stopped() {
				k := ids[rng.IntN(len(ids))]
				r, err := send("GET", ctxURL(c, topicName, k), nil)
				l.reads.Add(1)
				switch {
				case err != nil:
					t.Errorf("read during rebalance: %v", err)
				case r.Status != http.StatusOK:
					t.Errorf("%s during rebalance = %d, want 200; body: %s", r.Req, r.Status, r.Raw)
				case docText(r) != existing[k]:
					t.Errorf("%s during rebalance = %s, want text %q", r.Req, r.Raw, existing[k])
				default:
					continue
				}
				l.failures.Add(1)
			}
		})
	}
	wg.Go(func() {
		for i := 0; !stopped(); i++ {
			k := fmt.Sprintf("%s-%05d", prefix, i)
			text := "written during the rebalance: " + k
			r, err := send("PUT", ctxURL(c, topicName, k), textDoc(text))
			l.writes.Add(1)
			switch {
			case err != nil:
				t.Errorf("write during rebalance: %v", err)
			case r.Status != http.StatusCreated:
				t.Errorf("%s during rebalance = %d, want 201; body: %s", r.Req, r.Status, r.Raw)
			default:
				l.mu.Lock()
				l.added[k] = text
				l.mu.Unlock()
				continue
			}
			l.failures.Add(1)
		}
	})
	return l, &wg
}

// recordsPerContext is how many records a context of text is stored as:
// itself and its words for keyword search (bucket text).
const recordsPerContext = 2

// rebalanceFigures logs what a finished rebalance moved and how fast, and
// returns the share of keys moved: keys copied over the keys held before
// times the replicas. copyEnd is when the cleanup phase was first seen (the
// copy and its verification done; zero if never seen).
func rebalanceFigures(t testing.TB, what string, v clusterView, keysBefore, replicas int, copyEnd time.Time) float64 {
	t.Helper()
	rb := v.Rebalance
	if rb == nil || rb.FinishedAt == nil {
		t.Fatalf("%s: /api/v1/cluster shows no finished rebalance: %+v", what, rb)
	}
	share := float64(rb.KeysCopied) / float64(keysBefore*replicas*recordsPerContext)
	t.Logf("%s: %d records copied of %d contexts × %d records × %d replicas = %.3f (ideal 0.25), %.1f kB, %d purged",
		what, rb.KeysCopied, keysBefore, recordsPerContext, replicas, share, float64(rb.BytesCopied)/1e3, rb.KeysPurged)
	rate := func(d time.Duration) string {
		return fmt.Sprintf("%s: %.0f keys/s, %.3f MB/s", d.Round(time.Millisecond),
			float64(rb.KeysCopied)/d.Seconds(), float64(rb.BytesCopied)/1e6/d.Seconds())
	}
	if !copyEnd.IsZero() {
		t.Logf("%s: copy and verification %s; whole rebalance (with the cleanup grace) %s",
			what, rate(copyEnd.Sub(rb.StartedAt)), rate(rb.FinishedAt.Sub(rb.StartedAt)))
	} else {
		t.Logf("%s: whole rebalance (with the cleanup grace) %s", what, rate(rb.FinishedAt.Sub(rb.StartedAt)))
	}
	return share
}

func TestGrowAndShrinkUnderLoad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ replicas, keys int }{{1, 1500}, {2, 800}} {
		t.Run(fmt.Sprintf("replicas=%d", tc.replicas), func(t *testing.T) {
			t.Parallel()
			testGrowAndShrink(t, tc.replicas, tc.keys)
		})
	}
}

func testGrowAndShrink(t *testing.T, replicas, n int) {
	// The contexts are written through a router with its hot cache on (it
	// serves the topic each PUT reads); the load then goes through one
	// without, so that every read reaches the shards.
	c := startReplicated(t, 3, replicas)
	createTopic(t, c.url(""), "grow")
	id := func(i int) string { return fmt.Sprintf("g-%04d", i) }
	// About 300 bytes a context, so bytes moved mean something.
	text := func(i int) string { return fmt.Sprintf("grow %s %s", id(i), strings.Repeat("x", 250)) }
	populate(t, c, "grow", n, id, text)
	c.router.stopClean(t)
	c.routerArgs = []string{"-cache-size=0"}
	c.startRouter(t)
	want := map[string]string{}
	for i := range n {
		want[id(i)] = text(i)
	}
	before := getCluster(t, c)

	// rebalance changes the config file with change, SIGHUPs the router
	// and runs the load until the cluster is stable over shards; it
	// returns the share of keys moved.
	rebalance := func(what, prefix string, after uint64, change func(), shards ...string) (clusterView, float64) {
		t.Helper()
		stop := make(chan struct{})
		l, wg := runLoad(t, c, "grow", want, prefix, stop)
		stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
		defer stopLoad() // if the test stops early: the load logs to t
		change()
		c.router.signal(t, syscall.SIGHUP)
		var copyEnd time.Time
		v := waitCluster(t, c, fmt.Sprintf("stable over %v after epoch %d", shards, after), func(v clusterView) bool {
			if copyEnd.IsZero() && v.Epoch > after && v.State == "cleanup" {
				copyEnd = time.Now()
			}
			return v.State == "stable" && v.Epoch > after && slices.Equal(v.shardNames(), shards)
		})
		stopLoad()
		t.Logf("%s: %d reads and %d writes during the rebalance", what, l.reads.Load(), l.writes.Load())
		keysBefore := len(want)
		maps.Copy(want, l.added)
		return v, rebalanceFigures(t, what, v, keysBefore, replicas, copyEnd)
	}

	// Grow 3 → 4: a quarter of the keys (of the copies, with replicas)
	// move to sh-4.
	var sh4 *shard
	grown, share := rebalance("grow 3 → 4", "grow", before.Epoch, func() { sh4 = c.addShard(t) }, "sh-1", "sh-2", "sh-3", "sh-4")
	if share < 0.15 || share > 0.35 {
		t.Errorf("growing 3 → 4 with %d replicas copied %d keys for %d contexts: %.3f of the copies, want about a quarter (0.15 to 0.35)",
			replicas, grown.Rebalance.KeysCopied, n, share)
	}
	if r := do(t, "GET", sh4.url("/v1/info"), nil); wantStatus(t, r, http.StatusOK) {
		held, _ := field(r.Body, "keys", "contexts").(float64)
		t.Logf("grow 3 → 4: %s holds %.0f of %d contexts × %d replicas (%.3f)", sh4.name, held, len(want), replicas, held/float64(len(want)*replicas))
	}
	checkAll(t, c, "grow", want)

	// Shrink 4 → 3: sh-4 leaves the config.
	rebalance("shrink 4 → 3", "shrink", grown.Epoch, func() {
		c.shards = c.shards[:3]
		c.writeConfig(t)
	}, "sh-1", "sh-2", "sh-3")

	// Every context moved off sh-4: its file holds none.
	sh4.proc.stopClean(t)
	for _, b := range []string{"topics", "contexts"} {
		if left := readBucket(t, sh4.db, b); len(left) != 0 {
			t.Errorf("after shrinking, %s still holds %d records in bucket %s", sh4.name, len(left), b)
		}
	}
	checkAll(t, c, "grow", want)
}

// ---- 4. two shards of three down ----

func TestTwoOfThreeDown(t *testing.T) {
	t.Parallel()
	c := startReplicated(t, 3, 3, "-cache-size=0")
	const n = 30
	createTopic(t, c.url(""), "two")
	id := func(i int) string { return fmt.Sprintf("t-%02d", i) }
	text := func(i int) string { return "two " + id(i) }
	populate(t, c, "two", n, id, text)
	// Texts each context may hold: its own, or that of a PUT answered 503,
	// which may have reached the one shard up.
	may := map[string][]string{}
	for i := range n {
		may[id(i)] = []string{text(i)}
	}

	for _, s := range c.shards[1:] {
		s.proc.kill(t)
	}
	check := func(when string) {
		t.Helper()
		for i := range n {
			key := id(i)
			newText := fmt.Sprintf("two %s %s", key, when)
			r := do(t, "PUT", ctxURL(c, "two", key), textDoc(newText))
			wantError(t, r, http.StatusServiceUnavailable, "unavailable")
			may[key] = append(may[key], newText)
			wantError(t, do(t, "DELETE", ctxURL(c, "two", key), nil), http.StatusServiceUnavailable, "unavailable")
			r = do(t, "GET", ctxURL(c, "two", key), nil)
			switch r.Status {
			case http.StatusServiceUnavailable:
			case http.StatusOK:
				if !slices.Contains(may[key], docText(r)) {
					t.Errorf("%s %s = %s, want one of %q", r.Req, when, r.Raw, may[key])
				}
			default:
				t.Errorf("%s %s = %d, want 503 or 200; body: %s", r.Req, when, r.Status, r.Raw)
			}
		}
		wantError(t, do(t, "POST", c.url("/api/v1/topics/two/contexts"), textDoc("new")), http.StatusServiceUnavailable, "unavailable")
	}
	check("before-detection")
	waitShardState(t, c, "sh-2", "down")
	waitShardState(t, c, "sh-3", "down")
	wantError(t, do(t, "GET", c.url("/readyz"), nil), http.StatusServiceUnavailable, "unavailable")
	check("after-detection")

	// Back up, every context reads its text or that of a write answered
	// 503; none is lost.
	for _, s := range c.shards[1:] {
		c.startShard(t, s)
	}
	waitStatus(t, c.url("/readyz"), http.StatusOK)
	for i := range n {
		r := do(t, "GET", ctxURL(c, "two", id(i)), nil)
		if wantStatus(t, r, http.StatusOK) && !slices.Contains(may[id(i)], docText(r)) {
			t.Errorf("%s = %s, want one of %q", r.Req, r.Raw, may[id(i)])
		}
	}
}

// ---- 5. the router killed in the middle of a rebalance ----

func TestRouterRestartMidRebalance(t *testing.T) {
	t.Parallel()
	// replicas = 3 and 3 → 4 shards: sh-4 gets a copy of about 3/4 of the
	// contexts, some 1200, and of their words, as many records again.
	// -sync-rate lets the first 1000 go at once (the limiter's burst) and
	// the rest at 25 keys/s: the copy runs for most of a minute after the
	// first keys are seen copied.
	// The hot cache stays on: the router that checks the keys at the end
	// is a new process, with an empty cache.
	const n = 1600
	c := startReplicated(t, 3, 3, "-sync-rate=25")
	createTopic(t, c.url(""), "mid")
	id := func(i int) string { return fmt.Sprintf("m-%04d", i) }
	text := func(i int) string { return "mid " + id(i) }
	populate(t, c, "mid", n, id, text)
	want := map[string]string{}
	for i := range n {
		want[id(i)] = text(i)
	}
	before := getCluster(t, c)

	c.addShard(t)
	c.router.signal(t, syscall.SIGHUP)
	v := waitCluster(t, c, "migrating with keys copied", func(v clusterView) bool {
		if v.State == "stable" && v.Epoch > before.Epoch {
			t.Fatalf("the rebalance finished before the router could be killed: %+v", v.Rebalance)
		}
		return v.State == "migrating" && v.Rebalance != nil && v.Rebalance.KeysCopied > 0
	})
	// Writes acknowledged just before the kill.
	for i := range 20 {
		k, txt := fmt.Sprintf("late-%02d", i), fmt.Sprintf("written just before the kill %d", i)
		r := do(t, "PUT", ctxURL(c, "mid", k), textDoc(txt))
		if r.Status != http.StatusCreated {
			t.Fatalf("%s = %d, want 201; body: %s", r.Req, r.Status, r.Raw)
		}
		want[k] = txt
	}
	last := getCluster(t, c)
	c.router.kill(t)
	if last.State != "migrating" || last.Rebalance == nil || last.Rebalance.FinishedAt != nil {
		t.Fatalf("router killed in state %q, rebalance %+v; want it migrating", last.State, last.Rebalance)
	}
	t.Logf("router killed at epoch %d, %s, %d keys copied (%d at first sight)",
		last.Epoch, last.State, last.Rebalance.KeysCopied, v.Rebalance.KeysCopied)

	// The throttle was there to hold the copy open until the kill. The
	// restarted router redoes the copy pass from the start and finds most
	// of sh-4's share still to copy, far more than a burst: at 25 keys/s
	// the rest would take half a minute of waiting. It runs unthrottled.
	c.routerArgs = nil
	c.startRouter(t)
	restarted := time.Now()
	after := waitStable(t, c, last.Epoch, "sh-1", "sh-2", "sh-3", "sh-4")
	t.Logf("the restarted router finished the rebalance %s after it started", time.Since(restarted).Round(100*time.Millisecond))
	if after.Rebalance != nil {
		t.Logf("restarted router finished the rebalance at epoch %d: %d keys copied, %d scanned", after.Epoch, after.Rebalance.KeysCopied, after.Rebalance.KeysScanned)
	}
	checkAll(t, c, "mid", want)
}

// ---- 6. repair of a node that missed 10,000 writes ----

func TestRepairAfterMissedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("a measurement: repairs 10,000 missed writes")
	}
	t.Parallel()
	const n = 10000
	c := startReplicated(t, 3, 3, "-cache-size=0")
	createTopic(t, c.url(""), "miss")
	putContext(t, c.url(""), "miss", "template", textDoc("a small context, as the 10,000 that sh-3 misses"))
	away := c.shards[2]
	away.proc.stopClean(t)

	// The writes sh-3 misses are records sh-1 and sh-2 hold and it does
	// not, as the router leaves them when it replicates with sh-3 down.
	// They go to the two daemons directly, in one batch each: 10,000 PUTs
	// through a router built with -race would take most of a minute, and
	// the repair, which is what this measures, sees the same thing.
	ctx := context.Background()
	live := []*storage.Client{storage.NewClient("sh-1", c.shards[0].addr, nil), storage.NewClient("sh-2", c.shards[1].addr, nil)}
	// The PUT was acknowledged by a quorum of two, which may have been sh-3
	// and one other: the third copy can still be on its way. Take the
	// template from whichever live daemon holds it, within a bound.
	var tmpl storage.Record
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if tmpl, err = live[0].Get(ctx, "contexts", []byte("miss\x00template")); err == nil {
			break
		}
		if tmpl, err = live[1].Get(ctx, "contexts", []byte("miss\x00template")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("read the template context from sh-1 or sh-2: %v", err)
		}
	}
	writes := make([]storage.Write, n)
	for i := range writes {
		writes[i].Record = storage.Record{Key: fmt.Appendf(nil, "miss\x00r-%05d", i), Version: tmpl.Version + 1 + uint64(i), Value: tmpl.Value}
	}
	for _, cl := range live {
		if _, err := cl.Apply(ctx, "contexts", writes); err != nil {
			t.Fatalf("write %d records to %s: %v", n, cl.Name(), err)
		}
	}

	// A router that starts with every shard up runs no repair by itself:
	// the one asked for below is the one that copies.
	c.router.stopClean(t)
	c.startShard(t, away)
	c.startRouter(t)
	start := time.Now()
	r := do(t, "POST", c.url("/api/v1/admin/repair?wait=true"), nil)
	took := time.Since(start)
	mustStatus(t, r, http.StatusOK)
	rep := decode[struct{ Repair syncView }](t, r).Repair
	t.Logf("repair of %s after %d missed writes: %s, %d keys scanned, %d copied: %.0f keys/s, %.3f MB/s",
		away.name, n, took.Round(time.Millisecond), rep.KeysScanned, rep.KeysCopied,
		float64(rep.KeysCopied)/took.Seconds(), float64(rep.BytesCopied)/1e6/took.Seconds())
	if rep.KeysCopied < n {
		t.Errorf("repair copied %d keys, want at least %d", rep.KeysCopied, n)
	}
	r = do(t, "GET", ctxURL(c, "miss", "template"), nil)
	if wantStatus(t, r, http.StatusOK) && docText(r) != "a small context, as the 10,000 that sh-3 misses" {
		t.Errorf("%s = %s after the repair", r.Req, r.Raw)
	}
	c.stop(t)
	held := readBucket(t, away.db, "contexts")
	if got := readBucket(t, c.shards[0].db, "contexts"); !maps.Equal(held, got) || len(held) != n+1 {
		t.Errorf("after repair %s holds %d contexts, %s %d, want the same %d", away.name, len(held), c.shards[0].name, len(got), n+1)
	}
}
