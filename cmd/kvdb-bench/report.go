package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

type report struct {
	o        options
	rows     []*rowResult
	size     *sizeResult
	failures []string
	corpus   *corpus
	machine  string
	tools    string
	elapsed  time.Duration
}

func (r *report) row(id string) *rowResult {
	for _, x := range r.rows {
		if x.def.id == id {
			return x
		}
	}
	return nil
}

// ratioDef is one of the targets stated as a ratio of two rows'
// throughput, computed per round (the two rows ran minutes apart at most)
// and then the median taken.
type ratioDef struct {
	name     string
	num, den string
	target   float64 // 0: no target
	atLeast  bool    // the target is a floor; else a ceiling
	p50      bool    // a ratio of p50 latencies; else of req/s
}

var ratioDefs = []ratioDef{
	{"row 4 / row 1: router cache hit vs echo ceiling", "4", "1", 0.80, true, false},
	{"row 5 / row 2: router cache miss vs BoltDB ceiling", "5", "2", 0.40, true, false},
	{"row 7a / row 3c: durable PUT on storaged vs Redis SET, appendfsync always", "7a", "3c", 0.50, true, false},
	{"row 7b / row 3c: durable PUT via router, replicas 1, vs the same Redis row", "7b", "3c", 0.30, true, false},
	{"row 7c / row 3c: durable PUT via router, replicas 3, vs the same Redis row", "7c", "3c", 0, true, false},
	{"row 8: page cost in the large topic / in the small one (req/s 8a / 8b)", "8a", "8b", 1.5, false, false},
	{"row 11b / 11a: append p50 at 10,000 messages / at 10, single-node", "11b", "11a", 1.3, false, true},
	{"row 11d / 11c: ?last=20 p50 at 10,000 messages / at 10, single-node", "11d", "11c", 1.3, false, true},
	{"row 11f / 11e: append p50 at 10,000 messages / at 10, 3 shards, replicas = 3", "11f", "11e", 1.3, false, true},
	{"row 11h / 11g: ?last=20 p50 at 10,000 messages / at 10, 3 shards, replicas = 3", "11h", "11g", 1.3, false, true},
}

func (r *report) ratio(d ratioDef) float64 {
	a, b := r.row(d.num), r.row(d.den)
	if a == nil || b == nil {
		return math.NaN()
	}
	var vs []float64
	for i := range a.samples {
		switch {
		case i >= len(b.samples):
		case d.p50 && a.samples[i].p50 > 0 && b.samples[i].p50 > 0:
			vs = append(vs, a.samples[i].p50/b.samples[i].p50)
		case !d.p50 && a.samples[i].rps > 0 && b.samples[i].rps > 0:
			vs = append(vs, a.samples[i].rps/b.samples[i].rps)
		}
	}
	return median(vs)
}

func verdict(v, target float64, atLeast bool) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case target == 0:
		return "(no target)"
	case atLeast && v >= target, !atLeast && v <= target:
		return "**met**"
	}
	return "**missed**"
}

func (r *report) markdown() string {
	var b strings.Builder
	o := r.o
	fmt.Fprintf(&b, "Measured %s on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), r.machine)
	if o.smoke {
		b.WriteString("**Smoke run** (-smoke): it checks that every row still runs; with one short round on small data its figures and verdicts mean nothing.\n\n")
	}
	rounds := fmt.Sprintf("%d interleaved rounds", o.rounds)
	if o.rounds == 1 {
		rounds = "1 round"
	}
	fmt.Fprintf(&b, "Load: %s; %d connections (wrk -t%d), one request in flight per connection (closed loop). "+
		"%s of %s per row; each cell is the median over the rounds, peak RSS the maximum (VmHWM, reset before each measurement). "+
		"%s keys of 4 KB JSON context documents (chat turns made from %s). Router -cache-size %s where a cache is on.\n\n",
		r.tools, o.conns, o.threads, rounds, o.duration, thousands(o.keys), r.corpusSource(), mib(o.cacheSize))
	b.WriteString("| row | measurement | req/s | p50 ms | p99 ms | router peak RSS | storaged peak RSS | server peak RSS | note |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|---|\n")
	for _, x := range r.rows {
		switch {
		case x.na != "":
			fmt.Fprintf(&b, "| %s | %s | n/a (%s) | | | | | | |\n", x.def.id, x.title, x.na)
			continue
		case x.err != nil && math.IsNaN(medianOf(x.samples, func(s sample) float64 { return s.rps })):
			fmt.Fprintf(&b, "| %s | %s | failed | | | | | | %s |\n", x.def.id, x.title, oneLine(x.err.Error()))
			continue
		}
		note := strings.TrimSpace(x.note + " " + cpuNote(x.samples))
		if x.err != nil {
			note = strings.TrimSpace(note + " failed in a round: " + oneLine(x.err.Error()))
		}
		if !x.rssReset {
			note = strings.TrimSpace(note + " RSS: process peak since start")
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", x.def.id, x.title,
			thousands(int(math.Round(medianOf(x.samples, func(s sample) float64 { return s.rps })))),
			ms(medianOf(x.samples, func(s sample) float64 { return s.p50 })),
			ms(medianOf(x.samples, func(s sample) float64 { return s.p99 })),
			mib(x.routerRSS), mib(x.shardRSS), mib(x.peerRSS), note)
	}
	if r.size != nil {
		z := r.size
		fmt.Fprintf(&b, "| 10 | stored bytes: chat corpus of %s contexts; 768-dim embeddings | see below | | | %s | | | single-node router, fresh file |\n",
			thousands(z.contexts), mib(z.routerRSS))
	}

	b.WriteString("\n| target | measured | target | verdict |\n|---|--:|--:|---|\n")
	for _, d := range ratioDefs {
		v := r.ratio(d)
		if r.row(d.num) == nil || r.row(d.den) == nil {
			continue
		}
		want := "–"
		if d.target > 0 {
			op := "≥"
			if !d.atLeast {
				op = "≤"
			}
			want = fmt.Sprintf("%s %.2f", op, d.target)
		}
		val := "–"
		if !math.IsNaN(v) {
			val = fmt.Sprintf("%.3f", v)
		} else if x := r.row(d.num); x.na != "" {
			val = "n/a"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", d.name, val, want, verdict(v, d.target, d.atLeast))
	}
	// A latency target: the row's median of pick, in ms, at most limit.
	latency := func(id, label string, pick func(sample) float64, limit float64) {
		x := r.row(id)
		if x == nil {
			return
		}
		v := medianOf(x.samples, pick)
		val := ms(v)
		if x.na != "" {
			val = "n/a"
		}
		fmt.Fprintf(&b, "| %s | %s | ≤ %.0f | %s |\n", label, val, limit, verdict(v, limit, false))
	}
	latency("12", "row 12: another router stops serving a replaced version, p99 ms after the write's acknowledgement",
		func(s sample) float64 { return s.p99 }, stalenessTarget)
	latency("9hy", fmt.Sprintf("row 9hy: hybrid search p50 ms at %s contexts, 3 shards", thousands(o.vectors)),
		func(s sample) float64 { return s.p50 }, hybridP50Target)
	if worst, limit, id := r.worstRouterRSS(); id != "" {
		fmt.Fprintf(&b, "| router peak RSS ≤ its -cache-size + 128 MiB, every row (worst: row %s) | %s | ≤ %s | %s |\n",
			id, mib(worst), mib(limit), verdict(float64(worst), float64(limit), false))
	}
	if z := r.size; z != nil && z.contexts > 0 && z.raw > 0 {
		rec := float64(z.record) / float64(z.raw)
		if z.dict.record > 0 {
			// The target is for what the product stores: with a trained
			// dictionary. Without one is the reference.
			fmt.Fprintf(&b, "| row 10: stored record bytes / raw JSON bytes, chat corpus, no dictionary | %.3f | – | (reference) |\n", rec)
		} else {
			fmt.Fprintf(&b, "| row 10: stored record bytes / raw JSON bytes, chat corpus, no dictionary | %.3f | ≤ 0.45 | %s |\n", rec, verdict(rec, 0.45, false))
		}
		if z.dict.record > 0 {
			rd := float64(z.dict.record) / float64(z.raw)
			fmt.Fprintf(&b, "| row 10: the same with a dictionary trained on other conversations | %.3f | ≤ 0.45 | %s |\n", rd, verdict(rd, 0.45, false))
		}
		if z.embDocs > 0 {
			per := float64(z.embWith-z.embWithout) / float64(z.embDocs*embeddingDims)
			fmt.Fprintf(&b, "| row 10: stored bytes per embedding dimension (768 dims) | %.3f | ≤ 4.10 | %s |\n", per, verdict(per, 4.1, false))
		}
	}

	if z := r.size; z != nil && z.contexts > 0 && z.raw > 0 {
		n := float64(z.contexts)
		fmt.Fprintf(&b, "\nRow 10, chat corpus of %s contexts (a system prompt and 4 to 24 turns each, made from %s):\n\n", thousands(z.contexts), r.corpusSource())
		b.WriteString("| measure | bytes per context | / raw JSON |\n|---|--:|--:|\n")
		fmt.Fprintf(&b, "| raw JSON as sent | %.0f | 1.000 |\n", float64(z.raw)/n)
		fmt.Fprintf(&b, "| baseline: each document alone through zstd (default level) | %.0f | %.3f |\n", float64(z.zstd)/n, float64(z.zstd)/float64(z.raw))
		fmt.Fprintf(&b, "| stored record: key + value as BoltDB holds it (router codec, version, flags) | %.0f | %.3f |\n", float64(z.record)/n, float64(z.record)/float64(z.raw))
		if z.dict.record > 0 {
			fmt.Fprintf(&b, "| stored record with a trained dictionary (trained first on %s other conversations) | %.0f | %.3f |\n",
				thousands(z.dict.trainDocs), float64(z.dict.record)/n, float64(z.dict.record)/float64(z.raw))
		}
		fmt.Fprintf(&b, "| BoltDB pages allocated to the contexts bucket | %.0f | %.3f |\n", float64(z.pages)/n, float64(z.pages)/float64(z.raw))
		switch {
		case z.dict.record > 0:
			fmt.Fprintf(&b, "\nDictionary: POST /api/v1/admin/compression/train on a fresh single-node router holding %s conversations made with other seeds "+
				"(none of the measured ones); dictionary %d, %d bytes, stored once per shard (%.1f bytes per context of this corpus if it were the only data). "+
				"The training's own measure on its held-out bodies: %.3f without, %.3f with it.\n",
				thousands(z.dict.trainDocs), z.dict.id, z.dict.dictBytes, float64(z.dict.dictBytes)/n, z.dict.ratioBefore, z.dict.ratioAfter)
		case z.dict.skipped != "":
			fmt.Fprintf(&b, "\nDictionary: not measured: %s.\n", z.dict.skipped)
		}
		if z.embDocs > 0 {
			d := float64(z.embDocs * embeddingDims)
			fmt.Fprintf(&b, "\nEmbeddings: %d documents stored with and without a 768-dim embedding; the difference per dimension is "+
				"%.3f stored bytes (%.2f bytes as JSON text).\n", z.embDocs, float64(z.embWith-z.embWithout)/d, float64(z.rawWith-z.rawWithout)/d)
		}
	}
	fmt.Fprintf(&b, "\nSuite run time %s.\n", r.elapsed.Round(time.Second))
	return b.String()
}

// worstRouterRSS finds the row whose router came closest to (or went
// furthest past) its -cache-size + 128 MiB.
func (r *report) worstRouterRSS() (worst, limit int64, id string) {
	best := -1.0
	for _, x := range r.rows {
		if x.cacheSize < 0 || x.routerRSS == 0 {
			continue
		}
		l := x.cacheSize + 128<<20
		if f := float64(x.routerRSS) / float64(l); f > best {
			best, worst, limit, id = f, x.routerRSS, l, x.def.id
		}
	}
	return worst, limit, id
}

func (r *report) corpusSource() string {
	if r.corpus == nil {
		return "packaged English text"
	}
	return r.corpus.source
}

func medianOf(ss []sample, f func(sample) float64) float64 {
	vs := make([]float64, len(ss))
	for i, s := range ss {
		vs[i] = f(s)
	}
	return median(vs)
}

func ms(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v < 1:
		return fmt.Sprintf("%.3f", v)
	case v < 100:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func mib(b int64) string {
	if b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// machineInfo describes the machine in one line.
func machineInfo() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
		}
	}
	osName := runtime.GOOS
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				osName = strings.Trim(strings.TrimSpace(v), `"`)
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%d × %s%s, %s, Linux %s, %s", runtime.NumCPU(), cpu, mem, osName, strings.TrimSpace(string(kernel)), runtime.Version())
}

// toolVersions names the load generators with their versions.
func toolVersions() string {
	wrk := "wrk"
	if out, _ := exec.Command("wrk", "-v").CombinedOutput(); len(out) > 0 {
		if f := strings.Fields(string(out)); len(f) >= 2 {
			wrk = "wrk " + strings.TrimPrefix(f[1], "debian/")
		}
	}
	redis := "redis-benchmark"
	if out, err := exec.Command("redis-server", "--version").Output(); err == nil {
		for f := range strings.FieldsSeq(string(out)) {
			if v, ok := strings.CutPrefix(f, "v="); ok {
				redis = "redis-benchmark " + v + " (Redis rows; wrk speaks only HTTP)"
			}
		}
	}
	return wrk + " for every HTTP row (rows 1, 2, 4–9), " + redis
}
