package main

import (
	"github.com/go-kvdb/go-kvdb/storage/vindex/vindextest"

	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kvdb/go-kvdb/storage"
	"golang.org/x/sync/errgroup"
)

const (
	docSize    = 4096 // bytes of JSON per context document
	listPage   = 100  // contexts per list page (row 8)
	putBodies  = 256  // distinct documents the write rows cycle through
	benchTopic = "bench"
	putTopic   = "put"
	putBucket  = "bench_put" // storaged bucket of the direct PUT row
)

// suite owns the work directory and every process started in it.
type suite struct {
	o   options
	dir string
	log io.Writer
	hc  *http.Client // loading and checks; the measurements use wrk

	mu    sync.Mutex // guards procs
	procs []*proc

	routerBin, storagedBin, selfBin string
	wrkLua                          string

	corpus    *corpus
	redisRate map[string]float64 // last req/s per redis test, sizes the next run

	steps map[string]*stepResult // setup steps done once, by name
	// set by the steps
	docs                    [][]byte
	docsFile, bodiesFile    string
	echo, bolt              *proc
	redisPlain, redisAOF    *proc
	shards                  []*proc
	routerHit, routerMiss   *proc
	routerR3                *proc
	shardsR3                []*proc  // the replicas = 3 row's own daemons
	shardPaths, routerPaths string   // path files of rows 6 and 4/5
	routerPathList          []string // the paths of rows 4/5, for warming
	putKeys, putPaths       string   // key and path files of rows 7a and 7b/7c
	listPaths               map[int]string
	searchPaths             string // row 9: the search route
	searchBodies            string // row 9: query bodies
	vecBase, vecQueries     *vindextest.Set
	vecRecall               float64      // row 9: recall@10 of the router's answers against exact ones
	vecBuild                float64      // row 9: vectors stored and indexed per second per shard
	hnswBuild               anchorLine   // row 9h: the anchor's build
	hnswEf                  []anchorLine // row 9h: its queries at each ef
	convSingle, convR3      *convSetup   // row 11
	stale                   *staleSetup  // row 12
	text                    *textSetup   // rows 9k and 9hy
}

type stepResult struct{ err error }

func newSuite(o options, dir string, log io.Writer) *suite {
	return &suite{
		o: o, dir: dir, log: log,
		hc: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 128, Proxy: nil},
		},
		redisRate: map[string]float64{},
		steps:     map[string]*stepResult{},
		listPaths: map[int]string{},
	}
}

func (s *suite) logf(format string, args ...any) {
	fmt.Fprintf(s.log, "kvdb-bench: "+format+"\n", args...)
}

// step runs fn once; later calls return its first error.
func (s *suite) step(name string, fn func() error) error {
	if r, ok := s.steps[name]; ok {
		return r.err
	}
	start := time.Now()
	err := fn()
	s.steps[name] = &stepResult{err: err}
	if err == nil {
		s.logf("ready: %s (%s)", name, time.Since(start).Round(time.Millisecond))
	}
	return err
}

// close stops every process, newest first.
func (s *suite) close() {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(p.stop)
	}
	wg.Wait()
}

// prepareBinaries builds router and storaged into the work directory, or
// takes them from -bin-dir, and writes the wrk script.
func (s *suite) prepareBinaries(ctx context.Context) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	s.selfBin = self
	s.wrkLua = filepath.Join(s.dir, "kvdb-bench.lua")
	if err := os.WriteFile(s.wrkLua, []byte(wrkScript), 0o644); err != nil {
		return err
	}
	binDir := s.o.binDir
	if binDir == "" {
		out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		gomod := strings.TrimSpace(string(out))
		if err != nil || gomod == "" || gomod == os.DevNull {
			return fmt.Errorf("find the module root (go env GOMOD): run kvdb-bench from inside the go-kvdb module, or pass -bin-dir")
		}
		binDir = filepath.Join(s.dir, "bin")
		s.logf("building router and storaged into %s", binDir)
		build := exec.CommandContext(ctx, "go", "build", "-o", binDir+string(filepath.Separator), "./cmd/router", "./cmd/storaged")
		build.Dir = filepath.Dir(gomod)
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	s.routerBin, s.storagedBin = filepath.Join(binDir, "router"), filepath.Join(binDir, "storaged")
	for _, b := range []string{s.routerBin, s.storagedBin} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("binary: %w", err)
		}
	}
	return nil
}

// ---- data ----

// stepDocs makes the keys' documents and the write rows' bodies.
func (s *suite) stepDocs() error {
	return s.step("documents", func() error {
		s.corpus = loadCorpus()
		s.docs = make([][]byte, s.o.keys)
		lines := make([]string, s.o.keys)
		for i := range s.docs {
			s.docs[i] = s.corpus.doc4K(uint64(i), docKey(i), docSize)
			lines[i] = string(s.docs[i])
		}
		var err error
		if s.docsFile, err = s.writeLines("docs.jsonl", lines); err != nil {
			return err
		}
		bodies := make([]string, putBodies)
		for i := range bodies {
			bodies[i] = string(s.corpus.doc4K(uint64(1_000_000+i), "", docSize))
		}
		s.bodiesFile, err = s.writeLines("bodies.jsonl", bodies)
		return err
	})
}

// ---- ceilings and peers ----

func (s *suite) stepEcho(ctx context.Context) error {
	return s.step("echo server", func() error {
		if err := s.stepDocs(); err != nil {
			return err
		}
		body := filepath.Join(s.dir, "echo-body.json")
		if err := os.WriteFile(body, s.docs[0], 0o644); err != nil {
			return err
		}
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		p, err := s.start("echo", addr, s.selfBin, serveCommand, "-mode=echo", "-addr="+addr, "-body="+body)
		if err != nil {
			return err
		}
		s.echo = p
		return p.waitHTTP(ctx, "http://"+addr+"/healthz", 10*time.Second)
	})
}

func (s *suite) stepBolt(ctx context.Context) error {
	return s.step("bolt server", func() error {
		if err := s.stepDocs(); err != nil {
			return err
		}
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		p, err := s.start("bolt", addr, s.selfBin, serveCommand, "-mode=bolt", "-addr="+addr,
			"-db="+filepath.Join(s.dir, "ceiling.db"), "-docs="+s.docsFile)
		if err != nil {
			return err
		}
		s.bolt = p
		return p.waitHTTP(ctx, "http://"+addr+"/healthz", 60*time.Second)
	})
}

// startRedis starts redis-server on a free port in its own directory, with
// the given extra configuration, and loads the keys' documents.
func (s *suite) startRedis(ctx context.Context, name string, conf ...string) (*proc, error) {
	if err := s.stepDocs(); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := strings.Cut(addr, ":")
	dir := filepath.Join(s.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	args := append([]string{"--port", port, "--bind", "127.0.0.1", "--dir", dir, "--save", "",
		"--protected-mode", "no", "--daemonize", "no", "--logfile", ""}, conf...)
	p, err := s.start(name, addr, "redis-server", args...)
	if err != nil {
		return nil, err
	}
	if err := p.waitRedis(ctx, 10*time.Second); err != nil {
		return nil, err
	}
	return p, loadRedis(ctx, addr, s.docs)
}

func (s *suite) stepRedisPlain(ctx context.Context) error {
	return s.step("redis (no persistence)", func() (err error) {
		s.redisPlain, err = s.startRedis(ctx, "redis-plain", "--appendonly", "no")
		return err
	})
}

func (s *suite) stepRedisAOF(ctx context.Context) error {
	return s.step("redis (appendfsync always)", func() (err error) {
		s.redisAOF, err = s.startRedis(ctx, "redis-aof", "--appendonly", "yes", "--appendfsync", "always")
		return err
	})
}

// ---- our cluster ----

// stepCluster starts the three storage daemons most rows use.
func (s *suite) stepCluster(ctx context.Context) error {
	return s.step("three storage daemons", func() (err error) {
		s.shards, err = s.startShards(ctx, "sh")
		return err
	})
}

// startShards starts three storage daemons named prefix-1..3 on fresh files.
func (s *suite) startShards(ctx context.Context, prefix string) ([]*proc, error) {
	var shards []*proc
	for i := 1; i <= 3; i++ {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("%s-%d", prefix, i)
		p, err := s.start(name, addr, s.storagedBin,
			"-db-location="+filepath.Join(s.dir, "data", name+".db"), "-http-addr="+addr)
		if err != nil {
			return nil, err
		}
		shards = append(shards, p)
	}
	for _, p := range shards {
		if err := p.waitHTTP(ctx, "http://"+p.addr+"/healthz", 15*time.Second); err != nil {
			return nil, err
		}
	}
	return shards, nil
}

// writeConfig writes a sharding.toml over shards.
func (s *suite) writeConfig(name string, replicas int, shards []*proc) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by kvdb-bench\nreplicas = %d\n", replicas)
	for i, p := range shards {
		fmt.Fprintf(&b, "\n[[shards]]\nname = %q\nidx = %d\naddress = %q\n", p.name, i, p.addr)
	}
	path := filepath.Join(s.dir, name)
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}

// startRouter starts a router over the cluster with the given extra flags.
func (s *suite) startRouter(ctx context.Context, name string, shards []*proc, replicas int, flags ...string) (*proc, error) {
	cfg, err := s.writeConfig(name+".toml", replicas, shards)
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := append([]string{"-http-addr=" + addr, "-config-file=" + cfg}, flags...)
	p, err := s.start(name, addr, s.routerBin, args...)
	if err != nil {
		return nil, err
	}
	return p, p.waitHTTP(ctx, "http://"+addr+"/readyz", 15*time.Second)
}

// stepRouterHit starts the router of the cache-hit and write rows, loads
// the keys' documents through it and reads each once to fill its cache.
// Its cache TTL is long so the entries stay hits over all rounds.
func (s *suite) stepRouterHit(ctx context.Context) error {
	return s.step("router with cache, data loaded", func() error {
		if err := s.stepDocs(); err != nil {
			return err
		}
		if err := s.stepCluster(ctx); err != nil {
			return err
		}
		p, err := s.startRouter(ctx, "router-cache", s.shards, 1, fmt.Sprintf("-cache-size=%d", s.o.cacheSize), "-cache-ttl=24h")
		if err != nil {
			return err
		}
		s.routerHit = p
		base := "http://" + p.addr
		if err := s.createTopic(ctx, base, benchTopic); err != nil {
			return err
		}
		if err := s.putAll(ctx, base, benchTopic, s.o.keys, docKey, func(i int) []byte { return s.docs[i] }); err != nil {
			return err
		}
		paths := make([]string, s.o.keys)
		for i := range paths {
			paths[i] = "/api/v1/topics/" + benchTopic + "/contexts/" + docKey(i)
		}
		s.routerPathList = paths
		if s.routerPaths, err = s.writeLines("router-paths.txt", paths); err != nil {
			return err
		}
		return s.getAll(ctx, base, paths)
	})
}

func (s *suite) stepRouterMiss(ctx context.Context) error {
	return s.step("router without cache", func() error {
		if err := s.stepRouterHit(ctx); err != nil { // loads the data
			return err
		}
		p, err := s.startRouter(ctx, "router-nocache", s.shards, 1, "-cache-size=0")
		s.routerMiss = p
		return err
	})
}

// stepShardPaths lists the keys of the loaded documents that live on sh-1,
// straight from its scan route, for the direct GET row.
func (s *suite) stepShardPaths(ctx context.Context) error {
	return s.step("keys on sh-1", func() error {
		if err := s.stepRouterHit(ctx); err != nil {
			return err
		}
		c := storage.NewClient("sh-1", s.shards[0].addr, s.hc)
		prefix := []byte(benchTopic + "\x00")
		var paths []string
		var after []byte
		for range 1000 { // bounded: 1000 pages of 1000 keys
			page, err := c.Scan(ctx, "contexts", storage.ScanOptions{Prefix: prefix, After: after, Limit: 1000})
			if err != nil {
				return err
			}
			for _, r := range page.Records {
				paths = append(paths, "/v1/get/contexts?k="+url.QueryEscape(string(r.Key)))
			}
			if !page.More || len(page.Records) == 0 {
				break
			}
			after = page.Records[len(page.Records)-1].Key
		}
		if len(paths) == 0 {
			return fmt.Errorf("sh-1 holds none of the %d keys: the ring put everything elsewhere", s.o.keys)
		}
		var err error
		s.shardPaths, err = s.writeLines("shard-paths.txt", paths)
		return err
	})
}

// stepPut prepares the write rows: keys for storaged's own bucket, and a
// topic for the router's PUTs. It checks once that a direct write applies.
func (s *suite) stepPut(ctx context.Context) error {
	return s.step("write rows", func() error {
		if err := s.stepRouterHit(ctx); err != nil {
			return err
		}
		keys := make([]string, s.o.keys)
		paths := make([]string, s.o.keys)
		for i := range keys {
			keys[i] = fmt.Sprintf("p%05d", i)
			paths[i] = "/api/v1/topics/" + putTopic + "/contexts/" + keys[i]
		}
		var err error
		if s.putKeys, err = s.writeLines("put-keys.txt", keys); err != nil {
			return err
		}
		if s.putPaths, err = s.writeLines("put-paths.txt", paths); err != nil {
			return err
		}
		c := storage.NewClient("sh-1", s.shards[0].addr, s.hc)
		res, err := c.Apply(ctx, putBucket, []storage.Write{{Record: storage.Record{Key: []byte("probe"), Version: 1, Value: s.docs[0]}}})
		if err != nil {
			return err
		}
		if res[0].Outcome != storage.Applied && res[0].Outcome != storage.Stale {
			return fmt.Errorf("probe write to sh-1: %v", res[0].Outcome)
		}
		return s.createTopic(ctx, "http://"+s.routerHit.addr, putTopic)
	})
}

// stepRouterR3 tries a router with replicas = 3, over three daemons of its
// own so its data and cluster state stay apart from the other rows'. Until
// replication lands the router refuses the configuration, and the row reads
// n/a.
func (s *suite) stepRouterR3(ctx context.Context) error {
	return s.step("router with replicas = 3", func() error {
		if err := s.stepPut(ctx); err != nil {
			return err
		}
		shards, err := s.startShards(ctx, "r3")
		if err != nil {
			return err
		}
		s.shardsR3 = shards
		p, err := s.startRouter(ctx, "router-replicas3", shards, 3, fmt.Sprintf("-cache-size=%d", s.o.cacheSize))
		if err != nil {
			if p != nil && p.exited() {
				msg := lastLines(p.logTail(), 1)
				return &naError{fmt.Sprintf("needs issue 3: the router refuses replicas = 3 (%s)", strings.TrimSpace(msg))}
			}
			return err
		}
		s.routerR3 = p
		return nil
	})
}

// stepList loads a topic of n contexts (ids l0000000…) and writes the paths
// of pages starting at random positions.
func (s *suite) stepList(ctx context.Context, n int) error {
	return s.step(fmt.Sprintf("topic of %d contexts", n), func() error {
		// Bulk loads go through the router without a cache, so they do not
		// evict the cache-hit row's entries from the other router's cache.
		if err := s.stepRouterMiss(ctx); err != nil {
			return err
		}
		if err := s.stepPut(ctx); err != nil {
			return err
		}
		base := "http://" + s.routerMiss.addr
		topic := fmt.Sprintf("list-%d", n)
		if err := s.createTopic(ctx, base, topic); err != nil {
			return err
		}
		bodies := make([][]byte, putBodies)
		for i := range bodies {
			bodies[i] = s.corpus.doc4K(uint64(1_000_000+i), "", docSize)
		}
		if err := s.putAll(ctx, base, topic, n, listID, func(i int) []byte { return bodies[i%len(bodies)] }); err != nil {
			return err
		}
		paths := make([]string, 1000)
		for i := range paths {
			p := "/api/v1/topics/" + topic + fmt.Sprintf("/contexts?limit=%d", listPage)
			if i > 0 { // page 0 is the first page; the others start anywhere
				after := (i * 7919) % (n - listPage)
				p += "&cursor=" + cursorAfter(listID(after))
			}
			paths[i] = p
		}
		// Check, on the router measured, that a page holds a full page.
		var page struct {
			Contexts []struct{} `json:"contexts"`
		}
		if err := s.callJSON(ctx, http.MethodGet, "http://"+s.routerHit.addr+paths[1], &page); err != nil {
			return err
		}
		if len(page.Contexts) != listPage {
			return fmt.Errorf("list %s: %d contexts in a page, want %d", paths[1], len(page.Contexts), listPage)
		}
		path, err := s.writeLines(topic+"-paths.txt", paths)
		s.listPaths[n] = path
		return err
	})
}

// Row 9: results a query asks for, and connections of its load.
const (
	searchK     = 10
	searchConns = 2
)

// stepVectors checks that the router answers a search, then stores
// -vectors contexts with a 768-dim embedding and two fortune sentences
// each (the words rows 9k and 9hy search) in topic "vec" and writes query
// bodies. Until the search route lands the row is n/a.
func (s *suite) stepVectors(ctx context.Context) error {
	return s.step(fmt.Sprintf("topic of %d embedded contexts", s.o.vectors), func() error {
		if err := s.stepRouterMiss(ctx); err != nil { // loads, as for lists
			return err
		}
		if err := s.stepPut(ctx); err != nil {
			return err
		}
		base := "http://" + s.routerMiss.addr
		const topic = "vec"
		if err := s.createTopic(ctx, base, topic); err != nil {
			return err
		}
		// Clustered unit vectors (vindextest, as the hnswlib anchor row
		// reads them): random ones in 768 dimensions have no near
		// neighbours, which no index is built for.
		s.vecBase = vindextest.Clustered(1, 2, s.o.vectors, embeddingDims, 100, 1)
		s.vecQueries = vindextest.Clustered(1, 3, 200, embeddingDims, 100, 1)
		queries := make([]string, s.vecQueries.Len())
		for i := range queries {
			queries[i] = string(mustJSON(&vecQuery{Embedding: s.vecQueries.Row(i), K: searchK}))
		}
		path := "/api/v1/topics/" + topic + "/search"
		status, msg, err := s.do(ctx, http.MethodPost, base+path, []byte(queries[0]))
		switch {
		case err != nil:
			return err
		case status == http.StatusNotFound && strings.Contains(msg, "route"), status == http.StatusMethodNotAllowed:
			return &naError{"needs issue 4: the router has no search route yet"}
		case status == http.StatusServiceUnavailable || status == http.StatusNotImplemented:
			return &naError{"needs issue 4: search answers " + strconv.Itoa(status) + ": " + oneLine(msg)}
		case status != http.StatusOK:
			return fmt.Errorf("POST %s: %d %s", path, status, msg)
		}
		start := time.Now()
		if err := s.bulkAll(ctx, base, topic, s.o.vectors, func(i int) any {
			return map[string]any{"metadata": map[string]any{"id": fmt.Sprintf("v%07d", i)}, "content": map[string]any{"text": s.corpus.fortuneText(uint64(i)), "embeddings": s.vecBase.Row(i)}}
		}); err != nil {
			return err
		}
		if err := s.waitIndexes(ctx, s.shards); err != nil {
			return err
		}
		s.vecBuild = float64(s.o.vectors) / float64(len(s.shards)) / time.Since(start).Seconds()
		if s.vecRecall, err = s.searchRecall(ctx, "http://"+s.routerHit.addr+"/api/v1/topics/"+topic+"/search"); err != nil {
			return err
		}
		// Check that a search finds a full page of results.
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.routerHit.addr+path, strings.NewReader(queries[1]))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := s.hc.Do(req)
		if err != nil {
			return err
		}
		var res struct {
			Results []json.RawMessage `json:"results"`
		}
		err = json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || len(res.Results) != searchK {
			return fmt.Errorf("search %s: status %d, %d results (want %d), %v", path, resp.StatusCode, len(res.Results), searchK, err)
		}
		if s.searchPaths, err = s.writeLines("search-paths.txt", []string{path}); err != nil {
			return err
		}
		s.searchBodies, err = s.writeLines("search-bodies.jsonl", queries)
		return err
	})
}

func jsonUnmarshalMust(b []byte, v any) {
	if err := json.Unmarshal(b, v); err != nil {
		panic(err)
	}
}

func listID(i int) string { return fmt.Sprintf("l%07d", i) }

// cursorAfter is the router's opaque cursor for "after this id": base64url
// of the id (router/list.go). A client passes next_cursor back instead; the
// suite makes cursors so pages can start anywhere in the topic.
func cursorAfter(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

// ---- HTTP helpers for loading and checks ----

func (s *suite) createTopic(ctx context.Context, base, name string) error {
	body := []byte(fmt.Sprintf(`{"name":%q}`, name))
	status, msg, err := s.do(ctx, http.MethodPost, base+"/api/v1/topics", body)
	if err != nil {
		return err
	}
	if status != http.StatusCreated && status != http.StatusConflict {
		return fmt.Errorf("create topic %s: %d %s", name, status, msg)
	}
	return nil
}

// putAll stores n documents in topic with 32 writers.
func (s *suite) putAll(ctx context.Context, base, topic string, n int, id func(int) string, body func(int) []byte) error {
	start := time.Now()
	var next, done atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	for range 32 {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return nil
				}
				u := base + "/api/v1/topics/" + topic + "/contexts/" + id(i)
				status, msg, err := s.do(ctx, http.MethodPut, u, body(i))
				if err != nil {
					return err
				}
				if status != http.StatusOK && status != http.StatusCreated {
					return fmt.Errorf("PUT %s: %d %s", u, status, msg)
				}
				if d := done.Add(1); d%20000 == 0 {
					s.logf("loading %s: %d/%d (%s)", topic, d, n, time.Since(start).Round(time.Second))
				}
			}
		})
	}
	return g.Wait()
}

// bulkAll stores n documents in topic through the bulk endpoint (POST
// …/contexts/_bulk), bulkSize a request, bulkConns requests at once: how a
// client loads a corpus. doc(i) names its id.
func (s *suite) bulkAll(ctx context.Context, base, topic string, n int, doc func(int) any) error {
	const bulkSize, bulkConns = 250, 4
	start := time.Now()
	var next, done atomic.Int64
	u := base + "/api/v1/topics/" + topic + "/contexts/_bulk"
	g, ctx := errgroup.WithContext(ctx)
	for range bulkConns {
		g.Go(func() error {
			for {
				lo := int(next.Add(bulkSize) - bulkSize)
				if lo >= n {
					return nil
				}
				docs := make([]any, 0, bulkSize)
				for i := lo; i < min(lo+bulkSize, n); i++ {
					docs = append(docs, doc(i))
				}
				status, msg, err := s.do(ctx, http.MethodPost, u, mustJSON(map[string]any{"contexts": docs}))
				if err != nil {
					return err
				}
				if status != http.StatusOK {
					return fmt.Errorf("POST %s: %d %s", u, status, oneLine(msg))
				}
				if d := done.Add(int64(len(docs))); d/20000 != (d-int64(len(docs)))/20000 {
					s.logf("loading %s: %d/%d (%s)", topic, d, n, time.Since(start).Round(time.Second))
				}
			}
		})
	}
	return g.Wait()
}

// getAll reads every path once (to fill the router's cache).
func (s *suite) getAll(ctx context.Context, base string, paths []string) error {
	var next atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	for range 32 {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(paths) {
					return nil
				}
				status, msg, err := s.do(ctx, http.MethodGet, base+paths[i], nil)
				if err != nil {
					return err
				}
				if status != http.StatusOK {
					return fmt.Errorf("GET %s: %d %s", paths[i], status, msg)
				}
			}
		})
	}
	return g.Wait()
}

func (s *suite) do(ctx context.Context, method, u string, body []byte) (int, string, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, "", err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode >= 300 {
		return resp.StatusCode, string(b), err
	}
	return resp.StatusCode, "", err
}

// callJSON sends a request without a body and decodes a 200 answer into v;
// another status is a *statusError.
func (s *suite) callJSON(ctx context.Context, method, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return &statusError{status: resp.StatusCode, method: method, msg: string(bytes.TrimSpace(b)), url: u}
	}
	return json.Unmarshal(b, v)
}

var errNoMetric = errors.New("metric not found")

// metricValue reads one sample of a counter from a Prometheus text page.
func (s *suite) metricValue(ctx context.Context, base, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			var v float64
			_, err := fmt.Sscanf(strings.TrimSpace(rest), "%g", &v)
			return v, err
		}
	}
	return 0, fmt.Errorf("%w: %s at %s/metrics", errNoMetric, name, base)
}

// metricOrZero is metricValue for a series that exists only once something
// was observed: missing, it is 0.
func (s *suite) metricOrZero(ctx context.Context, base, name string) (float64, error) {
	v, err := s.metricValue(ctx, base, name)
	if errors.Is(err, errNoMetric) {
		return 0, nil
	}
	return v, err
}

// naError marks a row that cannot be measured yet (a feature not landed).
type naError struct{ reason string }

func (e *naError) Error() string { return e.reason }

type vecQuery struct {
	Embedding []float32 `json:"embedding"`
	K         int       `json:"k"`
	Exact     bool      `json:"exact,omitempty"`
}

// waitIndexes waits (up to ten minutes) until every shard's vector
// indexes are ready (kvdb_vindex_ready 1).
func (s *suite) waitIndexes(ctx context.Context, shards []*proc) error {
	for range 6000 {
		ready := 0
		for _, p := range shards {
			_, body, err := s.fetch(ctx, http.MethodGet, "http://"+p.addr+"/metrics", nil)
			if err == nil && strings.Contains(body, "\nkvdb_vindex_ready 1\n") {
				ready++
			}
		}
		if ready == len(shards) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("vector indexes not ready after ten minutes")
}

// searchRecall asks every query from the indexes and with "exact": true,
// and returns the share of the exact top k the indexes found.
func (s *suite) searchRecall(ctx context.Context, u string) (float64, error) {
	ask := func(q vecQuery) (map[string]bool, bool, error) {
		status, body, err := s.fetch(ctx, http.MethodPost, u, mustJSON(&q))
		if err != nil || status != http.StatusOK {
			return nil, false, fmt.Errorf("search: %d %s %v", status, oneLine(body), err)
		}
		var res struct {
			Results []struct {
				Metadata struct{ ID string }
			}
			Exact bool
		}
		if err := json.Unmarshal([]byte(body), &res); err != nil {
			return nil, false, err
		}
		ids := map[string]bool{}
		for _, r := range res.Results {
			ids[r.Metadata.ID] = true
		}
		return ids, res.Exact, nil
	}
	found, total := 0, 0
	for i := range s.vecQueries.Len() {
		q := vecQuery{Embedding: s.vecQueries.Row(i), K: searchK}
		ann, exact, err := ask(q)
		if err != nil {
			return 0, err
		}
		if exact {
			return 0, fmt.Errorf("search from ready indexes answered exact")
		}
		q.Exact = true
		want, _, err := ask(q)
		if err != nil {
			return 0, err
		}
		for id := range want {
			total++
			if ann[id] {
				found++
			}
		}
	}
	return float64(found) / float64(total), nil
}

// fetch is do that returns the body of every answer.
func (s *suite) fetch(ctx context.Context, method, u string, body []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, string(b), err
}
