// Command storaged serves one shard of Go-KVDB: a BoltDB file behind the
// binary HTTP protocol the router speaks.
//
//	storaged -db-location=database/sh-1.db -config-file=sharding.toml -shard=sh-1
//	storaged -db-location=database/sh-1.db -http-addr=127.0.0.1:8081
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-kvdb/go-kvdb/cmd/internal/cluster"
	"github.com/go-kvdb/go-kvdb/cmd/internal/daemon"
	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/storage"
)

const defaultAddr = "127.0.0.1:8081"

func main() { daemon.Main("storaged", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if daemon.IsHealthcheck(args) {
		return daemon.Healthcheck(ctx, "storaged", defaultAddr, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("storaged", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dbLocation := fs.String("db-location", "", "path of the shard's BoltDB file (required; directories are created)")
	httpAddr := fs.String("http-addr", "", "listen address host:port (default: the shard's address in -config-file, else "+defaultAddr+")")
	configFile := fs.String("config-file", "", "cluster configuration (sharding.toml); with -shard, gives this daemon's address")
	shard := fs.String("shard", "", "this daemon's shard name in -config-file")
	grace := fs.Duration("shutdown-grace", 10*time.Second, "how long in-flight requests may run after SIGINT/SIGTERM")
	changesRetain := fs.Int("changes-retain", storage.DefaultChangesRetain, "newest entries the change log keeps for routers that resume")
	changesMaxAge := fs.Duration("changes-max-age", storage.DefaultChangesMaxAge, "oldest entry the change log keeps")
	secFlags := addSecurityFlags(fs)
	if err := daemon.ParseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return daemon.Usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *dbLocation == "" {
		return daemon.Usagef("-db-location is required")
	}
	if *changesRetain < 1 || *changesMaxAge <= 0 {
		return daemon.Usagef("-changes-retain %d and -changes-max-age %s must be positive", *changesRetain, *changesMaxAge)
	}
	addr := *httpAddr
	switch {
	case *configFile != "":
		if *shard == "" {
			return daemon.Usagef("-config-file needs -shard to name this daemon")
		}
		cfg, err := cluster.Load(*configFile)
		if err != nil {
			return &daemon.UsageError{Err: err}
		}
		s, err := cfg.Shard(*shard)
		if err != nil {
			return daemon.Usagef("-shard: %v", err)
		}
		if addr == "" {
			addr = strings.TrimPrefix(strings.TrimPrefix(s.Address, "http://"), "https://")
		}
	case *shard != "":
		return daemon.Usagef("-shard needs -config-file")
	}
	if addr == "" {
		addr = defaultAddr
	}

	log := daemon.Logger(stderr, "storaged")
	sec, err := secFlags.load(addr, log)
	if err != nil {
		return err
	}
	reg := metrics.NewRegistry()
	m := metrics.NewStorage(reg)
	vs := metrics.NewVectorSearch(reg)
	ks := metrics.NewKeywordSearch(reg)
	store, err := storage.Open(*dbLocation, storage.Options{
		SearchObserver:  vs.Observe,
		KeywordObserver: ks.Observe,
		LockTimeout:     2 * time.Second,
		ChangesRetain:   *changesRetain,
		ChangesMaxAge:   *changesMaxAge,
		Observer: func(d time.Duration, writes int) {
			m.CommitDuration.Observe(d.Seconds())
			m.CommitWrites.Observe(float64(writes))
		},
		Written: func(n int64) { m.WrittenBytes.Add(float64(n)) },
	})
	if err != nil {
		return err
	}
	defer store.Close()
	metrics.RegisterStore(reg, func() int64 {
		fi, err := os.Stat(*dbLocation)
		if err != nil {
			return 0
		}
		return fi.Size()
	})
	metrics.RegisterBolt(reg, func() metrics.BoltStats { return metrics.BoltStats(store.Stats()) })
	metrics.RegisterKeys(reg, func() (map[string]int64, error) {
		info, err := store.Info(context.Background())
		return info.Keys, err
	}, 30*time.Second)
	metrics.RegisterNodeInfo(reg, store.NodeID())
	metrics.RegisterVectorIndex(reg, daemon.VectorIndexStats(store))
	daemon.RegisterKeywordIndex(reg, store)

	ln, err := daemon.Listen(addr)
	if err != nil {
		return err
	}
	ln = sec.listener(ln)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(reg))
	mux.Handle("/", storage.NewHandler(store, log))
	log.Info("shard open", "db", *dbLocation, "node_id", store.NodeID(), "shard", *shard)
	if err := daemon.Serve(ctx, ln, m.HTTP.Wrap(sec.handler(endStreams(ctx, mux)), route), log, *grace); err != nil {
		return err
	}
	if err := store.Close(); err != nil {
		return fmt.Errorf("close %s: %w", *dbLocation, err)
	}
	log.Info("stopped")
	return nil
}

// endStreams ends the change streams (GET /v1/changes) when ctx is done.
// A stream lasts as long as its follower, so the graceful shutdown, which
// waits for the requests in flight, would otherwise wait out its grace; a
// follower whose stream ends resumes elsewhere or later from its sequence.
func endStreams(ctx context.Context, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/changes" {
			rctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			defer context.AfterFunc(ctx, cancel)()
			r = r.WithContext(rctx)
		}
		h.ServeHTTP(w, r)
	})
}

// route names a request's route for metrics: the path up to the bucket.
func route(r *http.Request) string {
	p := r.URL.Path
	for _, prefix := range []string{"/v1/get/", "/v1/apply/", "/v1/scan/", "/v1/delete-prefix/", "/v1/multiget/", "/v1/purge/", "/v1/topk/", "/v1/kwstats/", "/v1/keyword/"} {
		if strings.HasPrefix(p, prefix) {
			return prefix + "{bucket}"
		}
	}
	switch p {
	case "/healthz", "/metrics", "/v1/info", "/v1/changes", "/v1/changes/head", "/v1/txn", "/v1/reindex", "/v1/snapshot":
		return p
	}
	return "unmatched"
}
