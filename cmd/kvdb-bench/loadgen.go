package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// sample is one measurement of one row.
type sample struct {
	rps      float64
	p50, p99 float64 // milliseconds
	// CPU used during the measurement, in cores (CPU seconds per second):
	// by the load generator, and by the processes the row measures.
	cpuGen, cpuRouter, cpuShard, cpuPeer float64
}

// wrkScript picks, for every request, a random line of a file of paths
// (and of bodies for writes). Modes:
//
//	get    GET path
//	put    PUT path with a JSON body (the router's API)
//	post   POST path with a JSON body (search)
//	apply  POST /v1/apply/BUCKET to storaged with one binary write of the
//	       path line as key and a body line as value, at a version that
//	       grows with every request (base + counter*threads + thread id)
//
// Its arguments come after "--": mode, paths file, bodies file, then for
// apply the bucket, the version base and the number of threads.
const wrkScript = `-- kvdb-bench: random requests from a list of paths (and bodies).
local n = 0
function setup(thread)
  n = n + 1
  thread:set("tid", n)
end

local mode, paths, bodies, bucket, base, nthreads = "get", {}, {}, "", 0, 1
local counter = 0
local hdrs = {}

function init(args)
  mode = args[1]
  for l in io.lines(args[2]) do paths[#paths + 1] = l end
  if args[3] and args[3] ~= "-" then
    for l in io.lines(args[3]) do bodies[#bodies + 1] = l end
  end
  bucket = args[4] or ""
  base = tonumber(args[5] or "0")
  nthreads = tonumber(args[6] or "1")
  math.randomseed(tid * 7919 + os.time())
end

local function u64be(v)
  local t = {}
  for i = 8, 1, -1 do
    t[i] = string.char(v % 256)
    v = math.floor(v / 256)
  end
  return table.concat(t)
end

local function uvarint(v)
  local t = {}
  while v >= 128 do
    t[#t + 1] = string.char(v % 128 + 128)
    v = math.floor(v / 128)
  end
  t[#t + 1] = string.char(v)
  return table.concat(t)
end

request = function()
  local p = paths[math.random(#paths)]
  if mode == "get" then
    return wrk.format("GET", p, hdrs)
  elseif mode == "put" or mode == "post" then
    return wrk.format(string.upper(mode), p, {["Content-Type"] = "application/json"}, bodies[math.random(#bodies)])
  end
  counter = counter + 1
  local v = base + counter * nthreads + tid
  local val = bodies[math.random(#bodies)]
  -- cond none (0), match 0, then the record: key, version, flags, value
  local body = string.rep("\0", 9) .. uvarint(#p) .. p .. u64be(v) .. "\0" .. uvarint(#val) .. val
  return wrk.format("POST", "/v1/apply/" .. bucket, {["Content-Type"] = "application/octet-stream"}, body)
end
`

// wrkJob is one wrk run.
type wrkJob struct {
	base   string   // http://host:port
	mode   string   // get, put, post, apply
	paths  string   // file of paths (or keys, for apply)
	bodies string   // file of bodies, or "" for none
	extra  []string // apply: bucket, version base, threads
	conns  int      // connections when the row says otherwise; 0 means -conns
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkSockErr = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// runWrk drives one measurement with wrk and parses its summary. Any
// non-2xx answer or socket error fails the measurement: a fast error is not
// a result.
func (s *suite) runWrk(ctx context.Context, j wrkJob) (sample, error) {
	secs := max(1, int(s.o.duration.Seconds()))
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()
	conns := s.o.conns
	if j.conns > 0 {
		conns = j.conns
	}
	bodies := j.bodies
	if bodies == "" {
		bodies = "-"
	}
	args := []string{
		"-t", strconv.Itoa(min(s.o.threads, conns)), "-c", strconv.Itoa(conns), "-d", fmt.Sprintf("%ds", secs),
		"--timeout", "5s", "--latency", "-s", s.wrkLua, j.base,
		"--", j.mode, j.paths, bodies,
	}
	args = append(args, j.extra...)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "wrk", args...)
	out, err := cmd.CombinedOutput()
	text := string(out)
	if err != nil {
		return sample{}, fmt.Errorf("wrk %s: %v: %s", j.base, err, lastLines(text, 8))
	}
	if m := wrkNon2xx.FindStringSubmatch(text); m != nil && m[1] != "0" {
		return sample{}, fmt.Errorf("wrk %s: %s non-2xx answers: %s", j.base, m[1], lastLines(text, 8))
	}
	if m := wrkSockErr.FindStringSubmatch(text); m != nil {
		for _, n := range m[1:] {
			if n != "0" {
				return sample{}, fmt.Errorf("wrk %s: %s", j.base, m[0])
			}
		}
	}
	smp := sample{cpuGen: genCPU(cmd, time.Since(start))}
	m := wrkRPS.FindStringSubmatch(text)
	if m == nil {
		return sample{}, fmt.Errorf("wrk %s: no Requests/sec in: %s", j.base, lastLines(text, 8))
	}
	smp.rps, _ = strconv.ParseFloat(m[1], 64)
	for _, p := range wrkPct.FindAllStringSubmatch(text, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		switch p[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if p[1] == "50" {
			smp.p50 = v
		} else {
			smp.p99 = v
		}
	}
	if smp.rps <= 0 || smp.p50 <= 0 {
		return sample{}, fmt.Errorf("wrk %s: no throughput or latency in: %s", j.base, lastLines(text, 12))
	}
	return smp, nil
}

// runRedisBenchmark drives one Redis measurement. redis-benchmark runs a
// number of requests, not a duration: the count is sized from the rate the
// same test reached before (a short calibration the first time), so a
// measurement lasts about -duration.
func (s *suite) runRedisBenchmark(ctx context.Context, addr, test string) (sample, error) {
	key := addr + " " + test
	rate := s.redisRate[key]
	// Calibrate on runs long enough that connecting is noise: from 2,000
	// requests, four times more until a run lasts a quarter second.
	for n, tries := 2000, 0; rate == 0 && tries < 6; n, tries = n*4, tries+1 {
		start := time.Now()
		calib, err := s.redisBenchmarkN(ctx, addr, test, n)
		if err != nil {
			return sample{}, err
		}
		if time.Since(start) >= 250*time.Millisecond || tries == 5 {
			rate = calib.rps
		}
	}
	n := int(rate * s.o.duration.Seconds())
	n = min(max(n, 1000), 50_000_000)
	smp, err := s.redisBenchmarkN(ctx, addr, test, n)
	if err == nil {
		s.redisRate[key] = smp.rps
	}
	return smp, err
}

func (s *suite) redisBenchmarkN(ctx context.Context, addr, test string, n int) (sample, error) {
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(ctx, 5*s.o.duration+60*time.Second)
	defer cancel()
	args := []string{"-h", host, "-p", port, "-c", strconv.Itoa(s.o.conns), "-n", strconv.Itoa(n),
		"-d", strconv.Itoa(docSize), "-r", strconv.Itoa(s.o.keys), "-t", test, "--csv"}
	// Single-threaded, as redis-benchmark is designed: its --threads 2
	// mode was slower on the 2-core machine (48k against 92k GET/s) and
	// reported the same figure for GET and SET.
	start := time.Now()
	cmd := exec.CommandContext(ctx, "redis-benchmark", args...)
	out, err := cmd.Output()
	if err != nil {
		return sample{}, fmt.Errorf("redis-benchmark %s %s: %v: %s", addr, test, err, lastLines(string(out), 5))
	}
	recs, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
	if err != nil || len(recs) < 2 || len(recs[1]) < 7 {
		return sample{}, fmt.Errorf("redis-benchmark %s %s: unexpected output: %s", addr, test, lastLines(string(out), 5))
	}
	// "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
	smp := sample{cpuGen: genCPU(cmd, time.Since(start))}
	smp.rps, _ = strconv.ParseFloat(recs[1][1], 64)
	smp.p50, _ = strconv.ParseFloat(recs[1][4], 64)
	smp.p99, _ = strconv.ParseFloat(recs[1][6], 64)
	if smp.rps <= 0 {
		return sample{}, fmt.Errorf("redis-benchmark %s %s: no throughput in: %s", addr, test, lastLines(string(out), 5))
	}
	return smp, nil
}

// genCPU is the CPU a finished generator used, in cores.
func genCPU(cmd *exec.Cmd, wall time.Duration) float64 {
	st := cmd.ProcessState
	if st == nil || wall <= 0 {
		return 0
	}
	return (st.UserTime() + st.SystemTime()).Seconds() / wall.Seconds()
}

// loadRedis stores docs under redis-benchmark's key names
// (key:000000000042), pipelined, so the GET row reads real values.
func loadRedis(ctx context.Context, addr string, docs [][]byte) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	errc := make(chan error, 1)
	go func() {
		rd := bufio.NewReader(c)
		for range docs {
			line, err := rd.ReadString('\n')
			if err != nil {
				errc <- err
				return
			}
			if !strings.HasPrefix(line, "+OK") {
				errc <- fmt.Errorf("SET answered %q", strings.TrimSpace(line))
				return
			}
		}
		errc <- nil
	}()
	w := bufio.NewWriterSize(c, 1<<16)
	for i, doc := range docs {
		key := fmt.Sprintf("key:%012d", i)
		fmt.Fprintf(w, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n", len(key), key, len(doc))
		w.Write(doc)
		w.WriteString("\r\n")
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("load redis %s: %w", addr, err)
	}
	return nil
}

// writeLines writes one line per item to a file in the work directory.
func (s *suite) writeLines(name string, lines []string) (string, error) {
	path := filepath.Join(s.dir, name)
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
