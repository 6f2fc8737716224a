// Command kvdb-bench is Go-KVDB's benchmark suite (issue 6).
//
// It builds the router and storaged from this module, starts everything it
// measures on 127.0.0.1 (two ceiling servers, Redis with and without
// appendfsync always, a three-shard cluster with routers in front), loads
// 4 KB context documents made from packaged English text, drives every HTTP
// row with wrk (the Redis rows with redis-benchmark, since wrk speaks only
// HTTP: both are closed-loop C generators, 32 connections, one request in
// flight per connection) and prints one markdown table of medians over
// interleaved rounds, with the ratios the targets are stated in.
//
//	go run ./cmd/kvdb-bench                  # full run: 5 rounds × 5 s per row
//	go run ./cmd/kvdb-bench -smoke           # CI: one short round, small data
//	go run ./cmd/kvdb-bench -rows 4,5 -out /tmp/table.md
//
// It needs wrk, redis-server and redis-benchmark on PATH (Debian packages
// wrk, redis-server); fortunes-min gives the corpus more varied English.
// Every process it starts is stopped when it returns, on error, or on
// SIGINT/SIGTERM; it sends traffic only to 127.0.0.1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == serveCommand {
		// The suite re-executes itself to run the ceiling servers, so they
		// are processes of their own like everything else measured.
		os.Exit(serveMain(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintf(os.Stderr, "kvdb-bench: %v\n", err)
		os.Exit(1)
	}
}

// options are the suite's flags.
type options struct {
	rounds    int
	duration  time.Duration
	keys      int
	conns     int
	threads   int
	listSmall int // contexts in the small topic of row 8
	listLarge int // contexts in the large topic of row 8
	corpus    int // chat contexts stored for row 10
	vectors   int // embedded contexts searched in row 9
	cacheSize int64
	smoke     bool
	rows      string
	out       string
	binDir    string // prebuilt router and storaged; empty builds them
	keep      bool   // keep the work directory
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet("kvdb-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.rounds, "rounds", 5, "interleaved rounds; the table shows medians")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of one measurement (whole seconds, at least 1s)")
	fs.IntVar(&o.keys, "keys", 10000, "keys of 4 KB context documents")
	fs.IntVar(&o.conns, "conns", 32, "concurrent connections of the load generator")
	fs.IntVar(&o.threads, "threads", 2, "wrk threads (-t); redis-benchmark runs single-threaded")
	fs.IntVar(&o.listSmall, "list-small", 1000, "contexts in the small topic of row 8")
	fs.IntVar(&o.listLarge, "list-large", 100000, "contexts in the large topic of row 8")
	fs.IntVar(&o.corpus, "corpus", 2000, "chat contexts stored for row 10")
	fs.IntVar(&o.vectors, "vectors", 100000, "contexts with a 768-dim embedding searched in row 9")
	fs.Int64Var(&o.cacheSize, "cache-size", 256<<20, "the router's -cache-size in the cache-hit and PUT rows")
	fs.BoolVar(&o.smoke, "smoke", false, "tiny run for CI: 1 round of 1 s per row, 500 keys, small topics (explicit flags still win)")
	fs.StringVar(&o.rows, "rows", "", "rows to run, comma separated (\"4,5\", \"3c\", \"7\"); empty runs all")
	fs.StringVar(&o.out, "out", "", "also write the markdown table to this file")
	fs.StringVar(&o.binDir, "bin-dir", "", "use the router and storaged binaries in this directory instead of building them (e.g. a profiling build)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, databases, scripts) and print its path")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if o.smoke {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		defaults := map[string]func(){
			"rounds":     func() { o.rounds = 1 },
			"duration":   func() { o.duration = time.Second },
			"keys":       func() { o.keys = 500 },
			"list-small": func() { o.listSmall = 200 },
			"list-large": func() { o.listLarge = 2000 },
			"corpus":     func() { o.corpus = 100 },
			"vectors":    func() { o.vectors = 2000 },
		}
		for name, apply := range defaults {
			if !set[name] {
				apply()
			}
		}
	}
	switch {
	case o.rounds < 1 || o.rounds > 100:
		return fmt.Errorf("-rounds %d: want 1..100", o.rounds)
	case o.duration < time.Second || o.duration > 10*time.Minute:
		return fmt.Errorf("-duration %s: want 1s..10m", o.duration)
	case o.keys < 100 || o.keys > 1000000:
		return fmt.Errorf("-keys %d: want 100..1000000", o.keys)
	case o.conns < 1 || o.conns > 4096:
		return fmt.Errorf("-conns %d: want 1..4096", o.conns)
	case o.threads < 1 || o.threads > o.conns:
		return fmt.Errorf("-threads %d: want 1..conns", o.threads)
	case o.listSmall < listPage+1 || o.listLarge < o.listSmall || o.listLarge > 10000000:
		return fmt.Errorf("-list-small %d, -list-large %d: want %d < small <= large <= 10000000", o.listSmall, o.listLarge, listPage)
	case o.corpus < 1 || o.corpus > 1000000:
		return fmt.Errorf("-corpus %d: want 1..1000000", o.corpus)
	case o.vectors < searchK || o.vectors > 10000000:
		return fmt.Errorf("-vectors %d: want %d..10000000", o.vectors, searchK)
	case o.cacheSize < 1<<20:
		return fmt.Errorf("-cache-size %d: the cache-hit row needs a cache of at least 1 MiB", o.cacheSize)
	}
	sel, err := selectRows(o.rows)
	if err != nil {
		return err
	}
	for _, tool := range toolsFor(sel) {
		if _, err := exec.LookPath(tool.bin); err != nil {
			return fmt.Errorf("%s not found on PATH: install the Debian package %s (apt-get install -y %s)", tool.bin, tool.pkg, tool.pkg)
		}
	}

	dir, err := os.MkdirTemp("", "kvdb-bench-")
	if err != nil {
		return err
	}
	s := newSuite(o, dir, stderr)
	defer func() {
		s.close()
		if o.keep {
			fmt.Fprintf(stderr, "kvdb-bench: work directory kept: %s\n", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	if err := s.prepareBinaries(ctx); err != nil {
		return err
	}
	start := time.Now()
	rep, err := s.measure(ctx, sel)
	if err != nil {
		return err
	}
	rep.elapsed = time.Since(start)
	table := rep.markdown()
	fmt.Fprint(stdout, table)
	if o.out != "" {
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(o.out, []byte(table), 0o644); err != nil {
			return fmt.Errorf("write -out: %w", err)
		}
	}
	if len(rep.failures) > 0 {
		return fmt.Errorf("%d measurement(s) failed: %s", len(rep.failures), strings.Join(rep.failures, "; "))
	}
	return nil
}
