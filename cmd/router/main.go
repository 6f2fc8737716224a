// Command router is Go-KVDB's front: the public REST API, the hash ring,
// the hot cache and fan-out over the storage daemons.
//
// Without -config-file it runs in single-node mode and keeps the data in
// one BoltDB file itself (-db-location), so `go run ./cmd/router` is a
// working database. With -config-file=sharding.toml it routes to the
// storage daemons listed there.
package main

import (
	"context"
	"flag"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-kvdb/go-kvdb/cmd/internal/cluster"
	"github.com/go-kvdb/go-kvdb/cmd/internal/daemon"
	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router"
	"github.com/go-kvdb/go-kvdb/storage"
)

const (
	defaultCacheSize = 1 << 30
	defaultMaxBody   = 8 << 20
	// memoryHeadroom is what the router needs beside its cache: buffers,
	// connections, the codec's state.
	memoryHeadroom = 96 << 20
)

func main() { daemon.Main("router", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if daemon.IsHealthcheck(args) {
		return daemon.Healthcheck(ctx, "router", "127.0.0.1:8080", args[1:], stdout, stderr)
	}
	if isKeygen(args) {
		return keygen(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	fs.SetOutput(stderr)
	httpAddr := fs.String("http-addr", "127.0.0.1:8080", "listen address host:port")
	configFile := fs.String("config-file", "", "cluster configuration (sharding.toml): sharded mode; without it, single-node mode")
	dbLocation := fs.String("db-location", "database/kvdb.db", "single-node mode: the BoltDB file (directories are created)")
	cacheSize := fs.Int64("cache-size", defaultCacheSize, "hot cache size in bytes (default from KVDB_CACHE_SIZE when set); below 1 MiB the cache is off")
	maxBody := fs.Int64("max-body-size", defaultMaxBody, "largest request body accepted, in bytes")
	shardTimeout := fs.Duration("shard-timeout", 5*time.Second, "deadline of each call to a storage daemon")
	cacheTTL := fs.Duration("cache-ttl", time.Minute, "longest time a cached entry is served without reading its shard")
	syncRate := fs.Int("sync-rate", 0, "keys per second that repair and rebalance may copy (0: no cap)")
	repairInterval := fs.Duration("repair-interval", 10*time.Minute, "how often an anti-entropy pass runs; tombstones older than this are collected")
	grace := fs.Duration("shutdown-grace", 10*time.Second, "how long in-flight requests may run after SIGINT/SIGTERM")
	ollamaURL := fs.String("ollama-url", llmbridge.DefaultURL(), "Ollama's base URL (default: OLLAMA_HOST as the ollama client reads it, else http://127.0.0.1:11434)")
	embedModel := fs.String("embed-model", "", "Ollama model that embeds contexts written without embeddings, e.g. nomic-embed-text; empty turns auto-embedding off")
	chatModel := fs.String("chat-model", "", "default Ollama model of conversations (POST …/chat)")
	summaryModel := fs.String("summary-model", "", "Ollama model that folds old turns into a running summary (default: -chat-model)")
	discover := fs.String("discover", "", "discovery mode: find the storage daemons as the addresses of this DNS name, host:port (e.g. storaged:8081 under compose)")
	discoverEvery := fs.Duration("discover-interval", 5*time.Second, "discovery mode: how often the name is resolved again")
	replicas := fs.Int("replicas", 1, "discovery mode: how many storage daemons hold each key (capped at their number)")
	secFlags := addSecurityFlags(fs)
	if err := daemon.ParseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return daemon.Usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["cache-size"] {
		if env := os.Getenv("KVDB_CACHE_SIZE"); env != "" {
			n, err := strconv.ParseInt(env, 10, 64)
			if err != nil {
				return daemon.Usagef("KVDB_CACHE_SIZE=%q: not a number of bytes", env)
			}
			*cacheSize = n
		}
	}
	switch {
	case *cacheSize < 0:
		return daemon.Usagef("-cache-size %d: must not be negative", *cacheSize)
	case *maxBody < 1:
		return daemon.Usagef("-max-body-size %d: must be positive", *maxBody)
	case *shardTimeout <= 0:
		return daemon.Usagef("-shard-timeout %s: must be positive", *shardTimeout)
	case *syncRate < 0:
		return daemon.Usagef("-sync-rate %d: must not be negative", *syncRate)
	case *repairInterval <= 0:
		return daemon.Usagef("-repair-interval %s: must be positive", *repairInterval)
	case *cacheTTL <= 0:
		return daemon.Usagef("-cache-ttl %s: must be positive", *cacheTTL)
	case *configFile != "" && set["db-location"]:
		return daemon.Usagef("-db-location is for single-node mode; with -config-file the data lives on the storage daemons")
	case *discover != "" && *configFile != "":
		return daemon.Usagef("-discover and -config-file are two ways to name the storage daemons: give one")
	case *discover != "" && set["db-location"]:
		return daemon.Usagef("-db-location is for single-node mode; with -discover the data lives on the storage daemons")
	case *discover == "" && (set["replicas"] || set["discover-interval"]):
		return daemon.Usagef("-replicas and -discover-interval go with -discover (with -config-file, replicas is set in the file)")
	case *replicas < 1:
		return daemon.Usagef("-replicas %d: must be at least 1", *replicas)
	case *discoverEvery <= 0:
		return daemon.Usagef("-discover-interval %s: must be positive", *discoverEvery)
	}
	var resolve resolveFunc
	if *discover != "" {
		var err error
		if resolve, err = lookupHost(*discover); err != nil {
			return daemon.Usagef("-discover: %v", err)
		}
	}

	log := daemon.Logger(stderr, "router")
	// The hot cache lives on the Go heap; left alone, the collector lets
	// the heap grow to twice the live data. A soft limit just above the
	// cache keeps the process near -cache-size, unless GOMEMLIMIT says
	// otherwise.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(*cacheSize + memoryHeadroom)
	}
	sec, err := secFlags.load(*httpAddr, stdout, log)
	if err != nil {
		return err
	}
	defer sec.close()
	reg := metrics.NewRegistry()
	cfg := router.Config{
		CacheBytes:     *cacheSize,
		CacheTTL:       *cacheTTL,
		MaxBodyBytes:   *maxBody,
		ShardTimeout:   *shardTimeout,
		SyncRate:       *syncRate,
		RepairInterval: *repairInterval,
		Registry:       reg,
		MetricsHandler: metrics.Handler(reg),
		Logger:         log,
	}
	sec.configure(&cfg)
	llm, err := llmbridge.New(*ollamaURL, llmbridge.Options{})
	if err != nil {
		return daemon.Usagef("-ollama-url: %v", err)
	}
	cfg.LLM = router.LLMConfig{Client: llm, EmbedModel: *embedModel, ChatModel: *chatModel, SummaryModel: *summaryModel}
	var disc *discoverer
	switch {
	case *discover != "":
		disc = newDiscoverer(*discover, resolve, sec.storageClient(), log)
		// A new cluster starts with the daemons compose is starting, not
		// with whichever answered first; an existing one keeps its map.
		nodes, err := disc.wait(ctx, *replicas, 30*time.Second, time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return nil // stopped while waiting
			}
			return err
		}
		disc.configure(&cfg, nodes, *replicas)
		log.Info("discovery mode", "target", *discover, "shards", len(nodes), "replicas", *replicas)
	case *configFile == "":
		store, err := storage.Open(*dbLocation, storage.Options{LockTimeout: 2 * time.Second})
		if err != nil {
			return err
		}
		defer store.Close()
		cfg.Mode = "single"
		cfg.Nodes = []router.Node{{Name: "local", Address: *dbLocation, Shard: store}}
		log.Info("single-node mode", "db", *dbLocation)
	default:
		cc, err := cluster.Load(*configFile)
		if err != nil {
			return &daemon.UsageError{Err: err}
		}
		// One transport for all shards: its pool keeps connections alive.
		hc := sec.storageClient()
		newShard := func(name, addr string) router.Shard { return storage.NewClient(name, addr, hc) }
		nodesOf := func(cc *cluster.Config) []router.Node {
			var nodes []router.Node
			for _, s := range cc.Shards {
				c := storage.NewClient(s.Name, s.Address, hc)
				nodes = append(nodes, router.Node{Name: s.Name, Address: c.Addr(), Shard: c})
			}
			return nodes
		}
		cfg.Mode = "sharded"
		cfg.Nodes, cfg.Replicas = nodesOf(cc), cc.Replicas
		cfg.NewShard = newShard
		cfg.Reload = func() ([]router.Node, int, error) {
			cc, err := cluster.Load(*configFile)
			if err != nil {
				return nil, 0, err
			}
			return nodesOf(cc), cc.Replicas, nil
		}
		log.Info("sharded mode", "config", *configFile, "shards", len(cc.Shards), "replicas", cc.Replicas)
	}
	rt, err := router.New(cfg)
	if err != nil {
		return err
	}
	defer rt.Close()
	if disc != nil {
		// New daemons join through the rebalance; stopped before rt.Close.
		wctx, cancel := context.WithCancel(ctx)
		defer disc.watch(wctx, *discoverEvery, rt.Reload)()
		defer cancel()
	}

	// SIGHUP re-reads the config file and rebalances if the shards changed.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			sec.reload(rt, log)
			if err := rt.Reload(); err != nil {
				log.Error("reload refused", "err", err)
			} else {
				log.Info("configuration reloaded")
			}
		}
	}()

	ln, err := daemon.Listen(*httpAddr)
	if err != nil {
		return err
	}
	ln = sec.listener(ln)
	if err := daemon.Serve(ctx, ln, rt.Handler(), log, *grace); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
