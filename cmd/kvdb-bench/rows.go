package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// rowDef is one row of the table. setup starts what the row needs
// (once: the steps are shared and memoised) and returns how to measure it.
type rowDef struct {
	id    string // "1", "3a", …
	num   int    // the row number, which -rows also accepts
	title string
	setup func(s *suite, ctx context.Context) (*target, error)
}

// target is a row ready to measure.
type target struct {
	measure func(ctx context.Context) (sample, error)
	// The processes whose peak RSS the row reports.
	routers, shards, peers []*proc
	// cacheSize is the -cache-size of the router measured, for the RSS
	// target; -1 when no router is measured.
	cacheSize int64
	note      func() string // optional, read after the last round
}

// rowDefs is the table, in the order each round runs it. To add a row that
// needs a feature not yet landed (replicas = 3, semantic search), give its
// setup a step that returns a *naError until the feature answers.
var rowDefs = []rowDef{
	{"1", 1, "ceiling: net/http echo of a fixed 4 KB JSON body", func(s *suite, ctx context.Context) (*target, error) {
		if err := s.stepEcho(ctx); err != nil {
			return nil, err
		}
		paths, err := s.writeLines("echo-paths.txt", []string{"/get"})
		if err != nil {
			return nil, err
		}
		return s.wrkTarget(wrkJob{base: "http://" + s.echo.addr, mode: "get", paths: paths}, nil, nil, []*proc{s.echo}, -1), nil
	}},
	{"2", 2, "ceiling: net/http server reading the value from BoltDB (one read tx)", func(s *suite, ctx context.Context) (*target, error) {
		if err := s.stepBolt(ctx); err != nil {
			return nil, err
		}
		paths := make([]string, s.o.keys)
		for i := range paths {
			paths[i] = "/get?k=" + docKey(i)
		}
		file, err := s.writeLines("bolt-paths.txt", paths)
		if err != nil {
			return nil, err
		}
		return s.wrkTarget(wrkJob{base: "http://" + s.bolt.addr, mode: "get", paths: file}, nil, nil, []*proc{s.bolt}, -1), nil
	}},
	{"3a", 3, "peer: Redis GET, no persistence", func(s *suite, ctx context.Context) (*target, error) {
		if err := s.stepRedisPlain(ctx); err != nil {
			return nil, err
		}
		return s.redisTarget(s.redisPlain, "get"), nil
	}},
	{"3b", 3, "peer: Redis SET, no persistence", func(s *suite, ctx context.Context) (*target, error) {
		if err := s.stepRedisPlain(ctx); err != nil {
			return nil, err
		}
		return s.redisTarget(s.redisPlain, "set"), nil
	}},
	{"3c", 3, "peer: Redis SET, appendonly yes + appendfsync always", func(s *suite, ctx context.Context) (*target, error) {
		if err := s.stepRedisAOF(ctx); err != nil {
			return nil, err
		}
		return s.redisTarget(s.redisAOF, "set"), nil
	}},
	{"4", 4, "ours: GET through the router, cache hit", func(s *suite, ctx context.Context) (*target, error) {
		if err := s.stepRouterHit(ctx); err != nil {
			return nil, err
		}
		base := "http://" + s.routerHit.addr
		t := s.wrkTarget(wrkJob{base: base, mode: "get", paths: s.routerPaths}, []*proc{s.routerHit}, s.shards, nil, s.o.cacheSize)
		// Count hits and misses around each measurement: the row is only
		// a cache-hit row if the router says so.
		var hits, misses float64
		inner := t.measure
		t.measure = func(ctx context.Context) (sample, error) {
			// Read every key once first: a key evicted or expired since
			// the last round is a hit again.
			if err := s.getAll(ctx, base, s.routerPathList); err != nil {
				return sample{}, err
			}
			h0, err1 := s.metricValue(ctx, base, "kvdb_cache_hits_total")
			m0, err2 := s.metricValue(ctx, base, "kvdb_cache_misses_total")
			smp, err := inner(ctx)
			h1, err3 := s.metricValue(ctx, base, "kvdb_cache_hits_total")
			m1, err4 := s.metricValue(ctx, base, "kvdb_cache_misses_total")
			if err == nil && errors.Join(err1, err2, err3, err4) == nil {
				hits, misses = hits+h1-h0, misses+m1-m0
			}
			return smp, err
		}
		t.note = func() string {
			if hits+misses == 0 {
				return ""
			}
			return fmt.Sprintf("%.2f%% hits", 100*hits/(hits+misses))
		}
		return t, nil
	}},
	{"5", 5, "ours: GET through the router, cache miss (-cache-size=0, to storaged)", func(s *suite, ctx context.Context) (*target, error) {
		if err := s.stepRouterMiss(ctx); err != nil {
			return nil, err
		}
		return s.withBatchStats(s.wrkTarget(wrkJob{base: "http://" + s.routerMiss.addr, mode: "get", paths: s.routerPaths}, []*proc{s.routerMiss}, s.shards, nil, 0), s.routerMiss, "get"), nil
	}},
	{"6", 6, "ours: GET directly on storaged (binary wire format)", func(s *suite, ctx context.Context) (*target, error) {
		if err := s.stepShardPaths(ctx); err != nil {
			return nil, err
		}
		return s.wrkTarget(wrkJob{base: "http://" + s.shards[0].addr, mode: "get", paths: s.shardPaths}, nil, s.shards[:1], nil, -1), nil
	}},
	{"7a", 7, "ours: durable PUT directly on storaged (4 KB value)", func(s *suite, ctx context.Context) (*target, error) {
		if err := s.stepPut(ctx); err != nil {
			return nil, err
		}
		addr := "http://" + s.shards[0].addr
		return s.withCommitStats(&target{
			measure: func(ctx context.Context) (sample, error) {
				// Versions grow with time, so every run writes above the
				// last one and each write applies (none is stale).
				base := strconv.FormatInt(time.Now().UnixMicro(), 10)
				return s.runWrk(ctx, wrkJob{base: addr, mode: "apply", paths: s.putKeys, bodies: s.bodiesFile,
					extra: []string{putBucket, base, strconv.Itoa(s.o.threads)}})
			},
			shards:    s.shards[:1],
			cacheSize: -1,
		}), nil
	}},
	{"7b", 7, "ours: durable PUT through the router, replicas = 1", func(s *suite, ctx context.Context) (*target, error) {
		if err := s.stepPut(ctx); err != nil {
			return nil, err
		}
		return s.withCommitStats(s.wrkTarget(wrkJob{base: "http://" + s.routerHit.addr, mode: "put", paths: s.putPaths, bodies: s.bodiesFile}, []*proc{s.routerHit}, s.shards, nil, s.o.cacheSize)), nil
	}},
	{"7c", 7, "ours: durable PUT through the router, replicas = 3", func(s *suite, ctx context.Context) (*target, error) {
		if err := s.stepRouterR3(ctx); err != nil {
			return nil, err
		}
		lines := make([]string, s.o.keys)
		for i := range lines {
			lines[i] = fmt.Sprintf("/api/v1/topics/%s3/contexts/p%05d", putTopic, i)
		}
		paths, err := s.writeLines("put3-paths.txt", lines)
		if err != nil {
			return nil, err
		}
		if err := s.createTopic(ctx, "http://"+s.routerR3.addr, putTopic+"3"); err != nil {
			return nil, err
		}
		return s.withCommitStats(s.wrkTarget(wrkJob{base: "http://" + s.routerR3.addr, mode: "put", paths: paths, bodies: s.bodiesFile}, []*proc{s.routerR3}, s.shardsR3, nil, s.o.cacheSize)), nil
	}},
	{"8a", 8, "", func(s *suite, ctx context.Context) (*target, error) {
		return s.listTarget(ctx, s.o.listSmall)
	}},
	{"8b", 8, "", func(s *suite, ctx context.Context) (*target, error) {
		return s.listTarget(ctx, s.o.listLarge)
	}},
	{"9", 9, "", func(s *suite, ctx context.Context) (*target, error) {
		if err := s.stepVectors(ctx); err != nil {
			return nil, err
		}
		// Each shard walks its ANN index (one goroutine a query); two
		// connections keep both cores busy, as a search that scanned
		// did, so the row compares with itself before the index.
		t := s.wrkTarget(wrkJob{base: "http://" + s.routerHit.addr, mode: "post", paths: s.searchPaths, bodies: s.searchBodies, conns: searchConns},
			[]*proc{s.routerHit}, s.shards, nil, s.o.cacheSize)
		t.note = func() string {
			return fmt.Sprintf("from the shards' ANN indexes: recall@10 %.3f against the exact scan; stored and indexed %.0f vectors/s per shard", s.vecRecall, s.vecBuild)
		}
		return t, nil
	}},
	{"9k", 9, "", func(s *suite, ctx context.Context) (*target, error) {
		t, err := s.stepTextQueries(ctx)
		if err != nil {
			return nil, err
		}
		return s.textTarget(t.keywordBodies, t.keywordSource), nil
	}},
	{"9hy", 9, "", func(s *suite, ctx context.Context) (*target, error) {
		t, err := s.stepTextQueries(ctx)
		if err != nil {
			return nil, err
		}
		return s.textTarget(t.hybridBodies, t.hybridSource), nil
	}},
	{"9h", 9, "anchor: Debian's python3-hnswlib, one thread, over row 9's vectors (ef 64)", func(s *suite, ctx context.Context) (*target, error) {
		if err := s.stepHnswlib(ctx); err != nil {
			return nil, err
		}
		return s.hnswlibTarget(), nil
	}},
	{"11a", 11, "ours: append one 1 KB message to a conversation of 10 messages, single-node", func(s *suite, ctx context.Context) (*target, error) {
		cs, err := s.stepConvSingle(ctx)
		if err != nil {
			return nil, err
		}
		return s.convTarget(cs, convShort, false), nil
	}},
	{"11b", 11, "ours: append one 1 KB message to a conversation of 10,000 messages, single-node", func(s *suite, ctx context.Context) (*target, error) {
		cs, err := s.stepConvSingle(ctx)
		if err != nil {
			return nil, err
		}
		return s.convTarget(cs, convLong, false), nil
	}},
	{"11c", 11, "ours: GET …/messages?last=20 to a conversation of 10 messages, single-node", func(s *suite, ctx context.Context) (*target, error) {
		cs, err := s.stepConvSingle(ctx)
		if err != nil {
			return nil, err
		}
		return s.convTarget(cs, convShort, true), nil
	}},
	{"11d", 11, "ours: GET …/messages?last=20 to a conversation of 10,000 messages, single-node", func(s *suite, ctx context.Context) (*target, error) {
		cs, err := s.stepConvSingle(ctx)
		if err != nil {
			return nil, err
		}
		return s.convTarget(cs, convLong, true), nil
	}},
	{"11e", 11, "ours: append one 1 KB message to a conversation of 10 messages, 3 shards, replicas = 3", func(s *suite, ctx context.Context) (*target, error) {
		cs, err := s.stepConvR3(ctx)
		if err != nil {
			return nil, err
		}
		return s.convTarget(cs, convShort, false), nil
	}},
	{"11f", 11, "ours: append one 1 KB message to a conversation of 10,000 messages, 3 shards, replicas = 3", func(s *suite, ctx context.Context) (*target, error) {
		cs, err := s.stepConvR3(ctx)
		if err != nil {
			return nil, err
		}
		return s.convTarget(cs, convLong, false), nil
	}},
	{"11g", 11, "ours: GET …/messages?last=20 to a conversation of 10 messages, 3 shards, replicas = 3", func(s *suite, ctx context.Context) (*target, error) {
		cs, err := s.stepConvR3(ctx)
		if err != nil {
			return nil, err
		}
		return s.convTarget(cs, convShort, true), nil
	}},
	{"11h", 11, "ours: GET …/messages?last=20 to a conversation of 10,000 messages, 3 shards, replicas = 3", func(s *suite, ctx context.Context) (*target, error) {
		cs, err := s.stepConvR3(ctx)
		if err != nil {
			return nil, err
		}
		return s.convTarget(cs, convLong, true), nil
	}},
	{"12", 12, "ours: cross-router staleness: PUT through router A, GET through router B until it serves the new version, 3 shards, replicas = 3", func(s *suite, ctx context.Context) (*target, error) {
		st, err := s.stepStaleness(ctx)
		if err != nil {
			return nil, err
		}
		return s.stalenessTarget(st), nil
	}},
}

// withCommitStats makes a write row report, from the storage daemons' own
// metrics, how their group commit went: transactions per second, writes
// per transaction and time per transaction (fsyncs included).
func (s *suite) withCommitStats(t *target) *target {
	var commits, writes, secs, wall float64
	inner := t.measure
	t.measure = func(ctx context.Context) (sample, error) {
		c0, w0, s0, err0 := s.commitStats(ctx, t.shards)
		start := time.Now()
		smp, err := inner(ctx)
		d := time.Since(start).Seconds()
		c1, w1, s1, err1 := s.commitStats(ctx, t.shards)
		if err == nil && err0 == nil && err1 == nil {
			commits, writes, secs, wall = commits+c1-c0, writes+w1-w0, secs+s1-s0, wall+d
		}
		return smp, err
	}
	t.note = func() string {
		if commits == 0 || wall == 0 {
			return ""
		}
		return fmt.Sprintf("storaged commits: %.0f/s per daemon, %.1f writes and %.2f ms each;",
			commits/wall/float64(len(t.shards)), writes/commits, 1000*secs/commits)
	}
	return t
}

// withBatchStats makes a row report, from the router's own metrics, how
// many calls (Gets or Applies, by op) each of its requests to a shard
// carried: the hop's batching.
func (s *suite) withBatchStats(t *target, router *proc, op string) *target {
	var requests, calls float64
	base := "http://" + router.addr
	count := func(ctx context.Context) (n, c float64, err error) {
		n, err1 := s.metricOrZero(ctx, base, `kvdb_shard_batch_calls_count{op="`+op+`"}`)
		c, err2 := s.metricOrZero(ctx, base, `kvdb_shard_batch_calls_sum{op="`+op+`"}`)
		return n, c, errors.Join(err1, err2)
	}
	inner, note := t.measure, t.note
	t.measure = func(ctx context.Context) (sample, error) {
		n0, c0, err0 := count(ctx)
		smp, err := inner(ctx)
		n1, c1, err1 := count(ctx)
		if err == nil && err0 == nil && err1 == nil {
			requests, calls = requests+n1-n0, calls+c1-c0
		}
		return smp, err
	}
	t.note = func() string {
		out := ""
		if note != nil {
			out = note()
		}
		if requests > 0 {
			out += fmt.Sprintf(" router to shards: %.1f %s a request;", calls/requests, map[string]string{"get": "Gets", "apply": "Applies"}[op])
		}
		return strings.TrimSpace(out)
	}
	return t
}

// commitStats sums the commit histograms of shards.
func (s *suite) commitStats(ctx context.Context, shards []*proc) (commits, writes, secs float64, err error) {
	for _, p := range shards {
		base := "http://" + p.addr
		c, err1 := s.metricValue(ctx, base, "kvdb_bolt_commit_duration_seconds_count")
		d, err2 := s.metricValue(ctx, base, "kvdb_bolt_commit_duration_seconds_sum")
		w, err3 := s.metricValue(ctx, base, "kvdb_bolt_commit_writes_sum")
		if err := errors.Join(err1, err2, err3); err != nil {
			return 0, 0, 0, err
		}
		commits, secs, writes = commits+c, secs+d, writes+w
	}
	return commits, writes, secs, nil
}

func (s *suite) wrkTarget(j wrkJob, routers, shards, peers []*proc, cacheSize int64) *target {
	return &target{
		measure:   func(ctx context.Context) (sample, error) { return s.runWrk(ctx, j) },
		routers:   routers,
		shards:    shards,
		peers:     peers,
		cacheSize: cacheSize,
	}
}

func (s *suite) redisTarget(p *proc, test string) *target {
	return &target{
		measure:   func(ctx context.Context) (sample, error) { return s.runRedisBenchmark(ctx, p.addr, test) },
		peers:     []*proc{p},
		cacheSize: -1,
	}
}

func (s *suite) listTarget(ctx context.Context, n int) (*target, error) {
	if err := s.stepList(ctx, n); err != nil {
		return nil, err
	}
	return s.wrkTarget(wrkJob{base: "http://" + s.routerHit.addr, mode: "get", paths: s.listPaths[n]}, []*proc{s.routerHit}, s.shards, nil, s.o.cacheSize), nil
}

func rowTitle(d *rowDef, o options) string {
	switch d.id {
	case "8a":
		return fmt.Sprintf("ours: list a page of %d in a topic of %s contexts, 3 shards", listPage, thousands(o.listSmall))
	case "8b":
		return fmt.Sprintf("ours: list a page of %d in a topic of %s contexts, 3 shards", listPage, thousands(o.listLarge))
	case "9":
		return fmt.Sprintf("ours: semantic search, top %d over %s %d-dim vectors, 3 shards (%d connections)", searchK, thousands(o.vectors), embeddingDims, searchConns)
	case "9k":
		return fmt.Sprintf("ours: keyword search (BM25), top %d over row 9's %s contexts (two fortune sentences each), 3 shards (%d connections)", searchK, thousands(o.vectors), searchConns)
	case "9hy":
		return fmt.Sprintf("ours: hybrid search (keyword and vector legs, fused), top %d over row 9's %s contexts, 3 shards (%d connections)", searchK, thousands(o.vectors), searchConns)
	}
	return d.title
}

// selection is what -rows picked: row ids and row numbers.
type selection map[string]bool

func (sel selection) has(d *rowDef) bool {
	return sel == nil || sel[d.id] || sel[strconv.Itoa(d.num)]
}

func (sel selection) hasSize() bool { return sel == nil || sel["10"] }

func selectRows(spec string) (selection, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, nil
	}
	known := map[string]bool{"10": true}
	for _, d := range rowDefs {
		known[d.id], known[strconv.Itoa(d.num)] = true, true
	}
	sel := selection{}
	for f := range strings.SplitSeq(spec, ",") {
		f = strings.TrimSpace(f)
		if !known[f] {
			return nil, fmt.Errorf("-rows: unknown row %q (rows are 1..12, or 3a, 3b, 3c, 7a, 7b, 7c, 8a, 8b, 9k, 9hy, 9h, 11a..11h)", f)
		}
		sel[f] = true
	}
	return sel, nil
}

type tool struct{ bin, pkg string }

// toolsFor lists the programs the selected rows run.
func toolsFor(sel selection) []tool {
	var out []tool
	needWrk, needRedis := false, false
	for i := range rowDefs {
		d := &rowDefs[i]
		if !sel.has(d) {
			continue
		}
		switch d.num {
		case 3:
			needRedis = true
		case 11, 12: // their own load generators
		default:
			needWrk = true
		}
	}
	if needWrk {
		out = append(out, tool{"wrk", "wrk"})
	}
	if needRedis {
		out = append(out, tool{"redis-server", "redis-server"}, tool{"redis-benchmark", "redis-tools"})
	}
	return out
}

// rowResult collects one row over the rounds.
type rowResult struct {
	def     *rowDef
	title   string
	samples []sample // by round; a zero sample is a failed round
	na      string   // not measurable yet
	err     error    // setup or measurement failure
	// peak RSS over all rounds, bytes; 0 when not applicable
	routerRSS, shardRSS, peerRSS int64
	cacheSize                    int64
	note                         string
	rssReset                     bool // VmHWM was reset before each measurement
}

// measure runs the rounds: every round runs every selected row once, in
// table order, so slow drifts of the machine hit all rows alike.
func (s *suite) measure(ctx context.Context, sel selection) (*report, error) {
	rep := &report{o: s.o}
	targets := map[string]*target{}
	for i := range rowDefs {
		d := &rowDefs[i]
		if sel.has(d) {
			rep.rows = append(rep.rows, &rowResult{def: d, title: rowTitle(d, s.o), samples: make([]sample, s.o.rounds), cacheSize: -1, rssReset: true})
		}
	}
	for round := range s.o.rounds {
		for _, r := range rep.rows {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if r.na != "" || r.err != nil {
				continue
			}
			t := targets[r.def.id]
			if t == nil {
				var err error
				t, err = r.def.setup(s, ctx)
				var na *naError
				switch {
				case errors.As(err, &na):
					r.na = na.reason
					s.logf("row %s: n/a: %s", r.def.id, na.reason)
					continue
				case err != nil:
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
					r.err = err
					rep.failures = append(rep.failures, fmt.Sprintf("row %s: %v", r.def.id, err))
					s.logf("row %s: setup failed: %v", r.def.id, err)
					continue
				}
				targets[r.def.id] = t
				r.cacheSize = t.cacheSize
			}
			all := append(append(append([]*proc(nil), t.routers...), t.shards...), t.peers...)
			for _, p := range all {
				r.rssReset = resetPeak(p.pid()) && r.rssReset
			}
			c0r, c0s, c0p := cpuOf(t.routers), cpuOf(t.shards), cpuOf(t.peers)
			start := time.Now()
			smp, err := t.measure(ctx)
			if wall := time.Since(start).Seconds(); err == nil {
				smp.cpuRouter = (cpuOf(t.routers) - c0r) / wall
				smp.cpuShard = (cpuOf(t.shards) - c0s) / wall
				smp.cpuPeer = (cpuOf(t.peers) - c0p) / wall
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				r.err = err
				rep.failures = append(rep.failures, fmt.Sprintf("row %s round %d: %v", r.def.id, round+1, err))
				s.logf("row %s round %d: %v", r.def.id, round+1, err)
				continue
			}
			r.samples[round] = smp
			r.routerRSS = max(r.routerRSS, maxPeak(t.routers))
			r.shardRSS = max(r.shardRSS, maxPeak(t.shards))
			r.peerRSS = max(r.peerRSS, maxPeak(t.peers))
			s.logf("round %d/%d row %-3s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms  %s", round+1, s.o.rounds, r.def.id, smp.rps, smp.p50, smp.p99, cpuNote([]sample{smp}))
		}
	}
	for _, r := range rep.rows {
		if t := targets[r.def.id]; t != nil && t.note != nil {
			r.note = t.note()
		}
	}
	if sel.hasSize() {
		if err := s.stepDocs(); err != nil {
			return nil, err
		}
		size, err := s.measureSize(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			rep.failures = append(rep.failures, fmt.Sprintf("row 10: %v", err))
			s.logf("row 10: %v", err)
		}
		rep.size = size
	}
	rep.corpus = s.corpus
	rep.machine = machineInfo()
	rep.tools = toolVersions()
	return rep, nil
}

func maxPeak(ps []*proc) int64 {
	var m int64
	for _, p := range ps {
		m = max(m, peakRSS(p.pid()))
	}
	return m
}

// median of the non-zero values; NaN when there are none.
func median(vs []float64) float64 {
	var xs []float64
	for _, v := range vs {
		if v > 0 && !math.IsNaN(v) && !math.IsInf(v, 0) {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return math.NaN()
	}
	for i := 1; i < len(xs); i++ {
		for j := i; j > 0 && xs[j] < xs[j-1]; j-- {
			xs[j], xs[j-1] = xs[j-1], xs[j]
		}
	}
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

func thousands(n int) string {
	s := strconv.Itoa(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// cpuNote summarises where the CPU went, as medians in cores.
func cpuNote(ss []sample) string {
	parts := []string{fmt.Sprintf("gen %.2f", medianOf(ss, func(s sample) float64 { return s.cpuGen }))}
	for _, c := range []struct {
		name string
		f    func(sample) float64
	}{
		{"router", func(s sample) float64 { return s.cpuRouter }},
		{"storaged", func(s sample) float64 { return s.cpuShard }},
		{"server", func(s sample) float64 { return s.cpuPeer }},
	} {
		if v := medianOf(ss, c.f); !math.IsNaN(v) && v >= 0.005 {
			parts = append(parts, fmt.Sprintf("%s %.2f", c.name, v))
		}
	}
	return "CPU cores: " + strings.Join(parts, ", ")
}
