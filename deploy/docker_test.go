package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The container fault tests bring the compose cluster up from a locally
// built image, with storaged scaled to 3 and replicas = 3, and put a client
// in front of the router's published port while containers are scaled,
// killed, cut off the network, paused, and the router restarted. They need
// a Docker engine with compose and take a few minutes, so they run only
// with KVDB_DOCKER_TESTS=1 (.ci/run sets it):
//
//	KVDB_DOCKER_TESTS=1 go test -count=1 -run TestCompose -v ./deploy/
//
// Traffic reaches only the project's own containers, through loopback.

const (
	composeProject = "kvdbtest"
	testImage      = "go-kvdb:kvdbtest"
	faultKeys      = 200
	faultWorkers   = 4
)

func TestComposeFaults(t *testing.T) {
	if os.Getenv("KVDB_DOCKER_TESTS") != "1" {
		t.Skip("container fault tests: set KVDB_DOCKER_TESTS=1 to run them (they need a Docker engine with compose; .ci/run sets it)")
	}
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		t.Skipf("container fault tests: no Docker engine answers (docker info: %v): %s", err, firstLine(out))
	}
	c := newCompose(t)
	if c == nil {
		t.Skip("container fault tests: neither `docker compose` nor `docker-compose` answers")
	}
	root := moduleRoot(t)
	build := exec.Command(filepath.Join(root, "deploy", "build.sh"))
	build.Env = append(os.Environ(), "IMAGE="+testImage)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("deploy/build.sh: %v\n%s", err, out)
	}

	port := strings.Split(freeAddrs(t, 1)[0], ":")[1]
	c.env = append(os.Environ(), "KVDB_PORT="+port, "KVDB_REPLICAS=3", "KVDB_IMAGE="+testImage)
	c.run(t, "down", "-v", "--remove-orphans") // leftovers of an interrupted run
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.output("logs", "--no-color", "--tail=60")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := c.output("down", "-v", "--remove-orphans"); err != nil {
			t.Errorf("compose down -v: %v\n%s", err, out)
		}
		exec.Command("docker", "rmi", testImage).Run() // rebuilt by the next run
	})
	c.run(t, "up", "-d", "--scale", "storaged=3")

	cl := &faultClient{base: "http://127.0.0.1:" + port, hc: &http.Client{Timeout: 15 * time.Second}, acked: map[int]int64{}}
	cl.waitCluster(t, "3 shards up", 90*time.Second, func(v clusterState) bool { return v.stable(3) })
	cl.seed(t)

	var rows []string
	report := func(name string, s scenarioStats) {
		rows = append(rows, fmt.Sprintf("%-22s %9d %9d %9d %9d %12d", name, s.attempted, s.acked, s.writeFailed, s.lost, s.failedReads))
	}
	t.Cleanup(func() {
		t.Logf("fault scenarios (replicas = 3):\n%-22s %9s %9s %9s %9s %12s\n%s", "scenario", "attempted", "acked", "w-failed", "lost", "failed reads",
			strings.Join(rows, "\n"))
	})

	t.Run("scale to 4", func(t *testing.T) {
		s := cl.during(t, func() {
			c.run(t, "up", "-d", "--no-recreate", "--scale", "storaged=4")
			cl.waitCluster(t, "4 shards, rebalanced", 90*time.Second, func(v clusterState) bool { return v.stable(4) })
		})
		report("scale 3 -> 4", s)
		if s.lost > 0 || s.failedReads > 0 {
			t.Errorf("scale to 4: %d lost writes, %d failed reads of existing keys, want 0 and 0", s.lost, s.failedReads)
		}
	})

	t.Run("kill and start", func(t *testing.T) {
		victim := c.storageContainers(t)[0]
		s := cl.during(t, func() {
			docker(t, "kill", victim)
			cl.waitCluster(t, "a shard down", 30*time.Second, func(v clusterState) bool { return v.count("down") == 1 })
			time.Sleep(5 * time.Second) // keep writing while it is dead
			docker(t, "start", victim)
			cl.waitCluster(t, "all shards up", 60*time.Second, func(v clusterState) bool { return v.stable(4) })
		})
		s.lost = cl.converge(t)
		report("kill, start", s)
		if s.lost > 0 {
			t.Errorf("kill: %d acknowledged writes lost, want 0", s.lost)
		}
	})

	t.Run("network disconnect", func(t *testing.T) {
		victim := c.storageContainers(t)[1]
		network := strings.TrimSpace(dockerOut(t, "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", victim))
		network = strings.Fields(network)[0]
		s := cl.during(t, func() {
			docker(t, "network", "disconnect", network, victim)
			time.Sleep(20 * time.Second)
			// The service alias makes the daemon findable by DNS again,
			// possibly at a new address.
			docker(t, "network", "connect", "--alias", "storaged", network, victim)
			cl.waitCluster(t, "all shards up", 60*time.Second, func(v clusterState) bool { return v.stable(4) })
		})
		s.lost = cl.converge(t)
		report("network cut 20 s", s)
		if s.lost > 0 {
			t.Errorf("network disconnect: %d acknowledged writes lost, want 0", s.lost)
		}
	})

	t.Run("pause", func(t *testing.T) {
		victim := c.storageContainers(t)[2]
		s := cl.during(t, func() {
			docker(t, "pause", victim)
			time.Sleep(8 * time.Second)
			docker(t, "unpause", victim)
			cl.waitCluster(t, "all shards up", 60*time.Second, func(v clusterState) bool { return v.stable(4) })
		})
		s.lost = cl.converge(t)
		report("pause 8 s", s)
		if s.lost > 0 || s.writeFailed > 0 || s.failedReads > 0 {
			t.Errorf("pause: %d lost, %d failed writes, %d failed reads; want requests to keep succeeding", s.lost, s.writeFailed, s.failedReads)
		}
	})

	t.Run("router restart", func(t *testing.T) {
		s := cl.during(t, func() {
			c.run(t, "restart", "router")
			cl.waitCluster(t, "router back with 4 shards", 90*time.Second, func(v clusterState) bool { return v.stable(4) })
		})
		s.lost = cl.converge(t)
		report("router restart", s)
		if s.lost > 0 {
			t.Errorf("router restart: %d acknowledged writes lost, want 0", s.lost)
		}
	})
}

// ---- compose and docker ----

type compose struct {
	cmd  []string // "docker compose" or "docker-compose"
	file string
	env  []string
}

func newCompose(t *testing.T) *compose {
	file := filepath.Join(moduleRoot(t), "docker-compose.yml")
	for _, cmd := range [][]string{{"docker", "compose"}, {"docker-compose"}} {
		args := append(slices.Clone(cmd[1:]), "version")
		if exec.Command(cmd[0], args...).Run() == nil {
			return &compose{cmd: cmd, file: file}
		}
	}
	return nil
}

func (c *compose) output(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	full := append(slices.Clone(c.cmd[1:]), "-p", composeProject, "-f", c.file)
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, c.cmd[0], full...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *compose) run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := c.output(args...); err != nil {
		t.Fatalf("compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// storageContainers lists the ids of the running storaged containers.
func (c *compose) storageContainers(t testing.TB) []string {
	t.Helper()
	out, err := c.output("ps", "-q", "storaged")
	if err != nil {
		t.Fatalf("compose ps: %v\n%s", err, out)
	}
	ids := strings.Fields(out)
	if len(ids) == 0 {
		t.Fatalf("no storaged container")
	}
	slices.Sort(ids)
	return ids
}

func dockerOut(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func docker(t testing.TB, args ...string) { t.Helper(); dockerOut(t, args...) }

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// ---- the client ----

// faultClient writes and reads contexts through the router. Each key is
// written by one worker only, so its acknowledged values come in order:
// a key must always read back at its last acknowledged value or a newer
// one (a write that failed may still have landed).
type faultClient struct {
	base string
	hc   *http.Client
	seq  atomic.Int64

	mu    sync.Mutex // guards acked
	acked map[int]int64
}

type scenarioStats struct {
	attempted, acked, writeFailed, failedReads, lost int
}

func keyURL(base string, k int) string {
	return fmt.Sprintf("%s/api/v1/topics/faults/contexts/k-%04d", base, k)
}

// put writes a new value of key k and records it if acknowledged.
func (c *faultClient) put(k int) bool {
	v := c.seq.Add(1)
	code, _, err := send(c.hc, "PUT", keyURL(c.base, k), map[string]any{"content": map[string]any{"text": strconv.FormatInt(v, 10)}})
	if err != nil || (code != http.StatusOK && code != http.StatusCreated) {
		return false
	}
	c.mu.Lock()
	c.acked[k] = v
	c.mu.Unlock()
	return true
}

// get reads key k: the value, or ok false when the read failed.
func (c *faultClient) get(k int) (int64, bool) {
	code, raw, err := send(c.hc, "GET", keyURL(c.base, k), nil)
	if err != nil || code != http.StatusOK {
		return 0, false
	}
	var doc struct {
		Content struct {
			Text string `json:"text"`
		} `json:"content"`
	}
	if json.Unmarshal(raw, &doc) != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(doc.Content.Text, 10, 64)
	return v, err == nil
}

func (c *faultClient) lastAcked(k int) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acked[k]
}

func (c *faultClient) seed(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, raw, err := send(c.hc, "POST", c.base+"/api/v1/topics", map[string]string{"name": "faults"})
		if err == nil && (code == http.StatusCreated || code == http.StatusConflict) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("create topic: %d %s %v", code, raw, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for k := range faultKeys {
		if c.put(k) {
			continue
		}
		if !c.put(k) { // one retry: the cluster has only just come up
			t.Fatalf("seed k-%04d: write failed twice", k)
		}
	}
}

// during runs traffic (faultWorkers writers and readers, each over its own
// keys) while fn runs and for two seconds around it.
func (c *faultClient) during(t *testing.T, fn func()) scenarioStats {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var attempted, acked, writeFailed, failedReads atomic.Int64
	var wg sync.WaitGroup
	for w := range faultWorkers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for ctx.Err() == nil {
				k := w + faultWorkers*rng.IntN(faultKeys/faultWorkers)
				attempted.Add(1)
				if rng.IntN(2) == 0 {
					if c.put(k) {
						acked.Add(1)
					} else {
						writeFailed.Add(1)
					}
					continue
				}
				want := c.lastAcked(k)
				if v, ok := c.get(k); !ok || v < want {
					failedReads.Add(1)
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	time.Sleep(2 * time.Second)
	fn()
	time.Sleep(2 * time.Second)
	cancel()
	wg.Wait()
	return scenarioStats{attempted: int(attempted.Load()), acked: int(acked.Load()), writeFailed: int(writeFailed.Load()), failedReads: int(failedReads.Load())}
}

// converge runs repair passes until one copies nothing (the replicas
// agree), then reads every key and returns how many lost an acknowledged
// write.
func (c *faultClient) converge(t *testing.T) int {
	t.Helper()
	for pass := 1; ; pass++ {
		code, raw, err := send(c.hc, "POST", c.base+"/api/v1/admin/repair?wait=true", nil)
		if err != nil || code != http.StatusOK {
			t.Fatalf("repair: %d %s %v", code, raw, err)
		}
		var ans struct {
			Repair struct {
				KeysCopied  int64 `json:"keys_copied"`
				KeysMissing int64 `json:"keys_missing"`
			} `json:"repair"`
		}
		if err := json.Unmarshal(raw, &ans); err != nil {
			t.Fatalf("repair answer %s: %v", raw, err)
		}
		if ans.Repair.KeysCopied == 0 && ans.Repair.KeysMissing == 0 {
			break // a pass found every replica up to date
		}
		if pass == 5 {
			t.Errorf("replicas still differ after %d repair passes: %s", pass, raw)
			break
		}
	}
	lost := 0
	for k := range faultKeys {
		want := c.lastAcked(k)
		v, ok := c.get(k)
		for try := 0; !ok && try < 5; try++ {
			time.Sleep(time.Second)
			v, ok = c.get(k)
		}
		if !ok || v < want {
			lost++
			t.Errorf("Get(k-%04d) = %d, %v; want %d or newer", k, v, ok, want)
		}
	}
	return lost
}

type clusterState struct {
	Epoch  uint64 `json:"epoch"`
	State  string `json:"state"`
	Shards []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"shards"`
}

func (v clusterState) count(state string) int {
	n := 0
	for _, s := range v.Shards {
		if s.State == state {
			n++
		}
	}
	return n
}

// stable reports a settled cluster of n shards, all up.
func (v clusterState) stable(n int) bool {
	return v.Epoch > 0 && v.State == "stable" && len(v.Shards) == n && v.count("up") == n
}

func (c *faultClient) waitCluster(t testing.TB, what string, bound time.Duration, cond func(clusterState) bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	var last string
	for time.Now().Before(deadline) {
		code, raw, err := send(c.hc, "GET", c.base+"/api/v1/cluster", nil)
		if err == nil && code == http.StatusOK {
			var v clusterState
			if json.Unmarshal(raw, &v) == nil && cond(v) {
				return
			}
		}
		last = fmt.Sprintf("%d %s %v", code, raw, err)
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: last /api/v1/cluster: %s", what, last)
}
