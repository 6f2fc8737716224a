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
	"log/slog"
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

// run is the router's life: flags, security, the shards of the chosen
// mode, the router, SIGHUP reloads, and serving until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if daemon.IsHealthcheck(args) {
		return daemon.Healthcheck(ctx, "router", "127.0.0.1:8080", args[1:], stdout, stderr)
	}
	if isKeygen(args) {
		return keygen(args[1:], stdout, stderr)
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := daemon.Logger(stderr, "router")
	limitMemory(o.cacheSize)
	sec, err := o.sec.load(o.httpAddr, stdout, log)
	if err != nil {
		return err
	}
	defer sec.close()
	cfg, err := o.config()
	if err != nil {
		return err
	}
	cfg.Logger = log
	sec.configure(&cfg)
	sh, err := o.openShards(ctx, &cfg, sec, log)
	if err != nil || sh == nil {
		return err // sh nil: stopped while waiting for the storage daemons
	}
	defer sh.close()
	rt, err := router.New(cfg)
	if err != nil {
		return err
	}
	defer rt.Close()
	defer sh.follow(ctx, rt)() // discovery: new daemons join; stopped before rt.Close
	defer onHangup(ctx, func() {
		sec.reload(rt, log)
		if err := rt.Reload(); err != nil {
			log.Error("reload refused", "err", err)
		} else {
			log.Info("configuration reloaded")
		}
	})()

	defer context.AfterFunc(ctx, rt.CloseStreams)() // change feeds end as shutdown begins
	ln, err := daemon.Listen(o.httpAddr)
	if err != nil {
		return err
	}
	if err := daemon.ServeHeaders(ctx, sec.listener(ln), rt.Handler(), log, o.grace, router.ServerMaxHeaderBytes); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// options are the router's flags, decoded and checked.
type options struct {
	httpAddr, configFile, dbLocation               string
	cacheSize, maxBody                             int64
	shardTimeout, cacheTTL, repairInterval, grace  time.Duration
	syncRate, replicas                             int
	ollamaURL, embedModel, chatModel, summaryModel string
	llmProvider, llmURL, llmKeyFile                string
	discover                                       string
	discoverEvery                                  time.Duration
	feedHeartbeat                                  time.Duration
	sec                                            *securityFlags
	resolve                                        resolveFunc // discovery mode's name lookup
}

// parseFlags decodes args, then checks them together: a bad flag or a
// bad combination is a usage error (exit status 2) naming it.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:8080", "listen address host:port")
	fs.StringVar(&o.configFile, "config-file", "", "cluster configuration (sharding.toml): sharded mode; without it, single-node mode")
	fs.StringVar(&o.dbLocation, "db-location", "database/kvdb.db", "single-node mode: the BoltDB file (directories are created)")
	fs.Int64Var(&o.cacheSize, "cache-size", defaultCacheSize, "hot cache size in bytes (default from KVDB_CACHE_SIZE when set); below 1 MiB the cache is off")
	fs.Int64Var(&o.maxBody, "max-body-size", defaultMaxBody, "largest request body accepted, in bytes")
	fs.DurationVar(&o.shardTimeout, "shard-timeout", 5*time.Second, "deadline of each call to a storage daemon")
	fs.DurationVar(&o.cacheTTL, "cache-ttl", time.Minute, "longest time a cached entry is served without reading its shard")
	fs.DurationVar(&o.feedHeartbeat, "feed-heartbeat", 15*time.Second, "how often an idle change feed (GET /api/v1/topics/{topic}/changes) sends a heartbeat comment")
	fs.IntVar(&o.syncRate, "sync-rate", 0, "keys per second that repair and rebalance may copy (0: no cap)")
	fs.DurationVar(&o.repairInterval, "repair-interval", 10*time.Minute, "how often an anti-entropy pass runs; tombstones older than this are collected")
	fs.DurationVar(&o.grace, "shutdown-grace", 10*time.Second, "how long in-flight requests may run after SIGINT/SIGTERM")
	fs.StringVar(&o.ollamaURL, "ollama-url", llmbridge.DefaultURL(), "Ollama's base URL (default: OLLAMA_HOST as the ollama client reads it, else http://127.0.0.1:11434)")
	fs.StringVar(&o.llmProvider, "llm-provider", llmbridge.ProviderOllama, "the model server's API: ollama, or openai (any OpenAI-compatible server: vLLM, llama.cpp, LM Studio, Ollama's /v1, …)")
	fs.StringVar(&o.llmURL, "llm-url", "", "the model server's URL; for openai the base URL ending in /v1 (default for ollama: -ollama-url)")
	fs.StringVar(&o.llmKeyFile, "llm-api-key-file", "", "file whose first line is the API key the router sends to an OpenAI-compatible server (never a client's)")
	fs.StringVar(&o.embedModel, "embed-model", "", "Ollama model that embeds contexts written without embeddings, e.g. nomic-embed-text; empty turns auto-embedding off")
	fs.StringVar(&o.chatModel, "chat-model", "", "default Ollama model of conversations (POST …/chat)")
	fs.StringVar(&o.summaryModel, "summary-model", "", "Ollama model that folds old turns into a running summary (default: -chat-model)")
	fs.StringVar(&o.discover, "discover", "", "discovery mode: find the storage daemons as the addresses of this DNS name, host:port (e.g. storaged:8081 under compose)")
	fs.DurationVar(&o.discoverEvery, "discover-interval", 5*time.Second, "discovery mode: how often the name is resolved again")
	fs.IntVar(&o.replicas, "replicas", 1, "discovery mode: how many storage daemons hold each key (capped at their number)")
	o.sec = addSecurityFlags(fs)
	if err := daemon.ParseFlags(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, daemon.Usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["cache-size"] {
		if env := os.Getenv("KVDB_CACHE_SIZE"); env != "" {
			n, err := strconv.ParseInt(env, 10, 64)
			if err != nil {
				return nil, daemon.Usagef("KVDB_CACHE_SIZE=%q: not a number of bytes", env)
			}
			o.cacheSize = n
		}
	}
	if err := o.check(set); err != nil {
		return nil, err
	}
	if o.discover != "" {
		var err error
		if o.resolve, err = lookupHost(o.discover); err != nil {
			return nil, daemon.Usagef("-discover: %v", err)
		}
	}
	return o, nil
}

// check refuses values out of range and flags that do not go together
// (set names the flags given).
func (o *options) check(set map[string]bool) error {
	switch {
	case o.cacheSize < 0:
		return daemon.Usagef("-cache-size %d: must not be negative", o.cacheSize)
	case o.maxBody < 1:
		return daemon.Usagef("-max-body-size %d: must be positive", o.maxBody)
	case o.shardTimeout <= 0:
		return daemon.Usagef("-shard-timeout %s: must be positive", o.shardTimeout)
	case o.syncRate < 0:
		return daemon.Usagef("-sync-rate %d: must not be negative", o.syncRate)
	case o.repairInterval <= 0:
		return daemon.Usagef("-repair-interval %s: must be positive", o.repairInterval)
	case o.feedHeartbeat <= 0:
		return daemon.Usagef("-feed-heartbeat %s: must be positive", o.feedHeartbeat)
	case o.cacheTTL <= 0:
		return daemon.Usagef("-cache-ttl %s: must be positive", o.cacheTTL)
	case o.configFile != "" && set["db-location"]:
		return daemon.Usagef("-db-location is for single-node mode; with -config-file the data lives on the storage daemons")
	case o.discover != "" && o.configFile != "":
		return daemon.Usagef("-discover and -config-file are two ways to name the storage daemons: give one")
	case o.discover != "" && set["db-location"]:
		return daemon.Usagef("-db-location is for single-node mode; with -discover the data lives on the storage daemons")
	case o.discover == "" && (set["replicas"] || set["discover-interval"]):
		return daemon.Usagef("-replicas and -discover-interval go with -discover (with -config-file, replicas is set in the file)")
	case o.replicas < 1:
		return daemon.Usagef("-replicas %d: must be at least 1", o.replicas)
	case o.discoverEvery <= 0:
		return daemon.Usagef("-discover-interval %s: must be positive", o.discoverEvery)
	case set["ollama-url"] && set["llm-url"]:
		return daemon.Usagef("-ollama-url and -llm-url both name the model server: give one")
	case set["ollama-url"] && o.llmProvider != llmbridge.ProviderOllama:
		return daemon.Usagef("-ollama-url goes with -llm-provider=ollama; name an OpenAI-compatible server with -llm-url")
	}
	return nil
}

// limitMemory sets a soft memory limit just above the hot cache, unless
// GOMEMLIMIT says otherwise: the cache lives on the Go heap, and left
// alone the collector lets the heap grow to twice the live data.
func limitMemory(cacheSize int64) {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cacheSize + memoryHeadroom)
	}
}

// config is the router's configuration from the flags, but for its
// shards and security.
func (o *options) config() (router.Config, error) {
	reg := metrics.NewRegistry()
	cfg := router.Config{
		CacheBytes:     o.cacheSize,
		CacheTTL:       o.cacheTTL,
		FeedHeartbeat:  o.feedHeartbeat,
		MaxBodyBytes:   o.maxBody,
		ShardTimeout:   o.shardTimeout,
		SyncRate:       o.syncRate,
		RepairInterval: o.repairInterval,
		Registry:       reg,
		MetricsHandler: metrics.Handler(reg),
	}
	url := o.llmURL
	if url == "" && o.llmProvider == llmbridge.ProviderOllama {
		url = o.ollamaURL
	}
	var key string
	if o.llmKeyFile != "" {
		var err error
		if key, err = llmbridge.ReadKeyFile(o.llmKeyFile); err != nil {
			return cfg, daemon.Usagef("-llm-api-key-file: %v", err)
		}
	}
	if o.llmProvider == llmbridge.ProviderOpenAI && url == "" {
		return cfg, daemon.Usagef("-llm-provider=openai needs -llm-url, the server's base URL ending in /v1 (like https://api.openai.com/v1 or http://127.0.0.1:11434/v1)")
	}
	llm, err := llmbridge.Open(llmbridge.Config{Provider: o.llmProvider, URL: url, APIKey: key})
	if err != nil {
		return cfg, daemon.Usagef("-llm-provider %s: %v", o.llmProvider, err)
	}
	cfg.LLM = router.LLMConfig{Client: llm, EmbedModel: o.embedModel, ChatModel: o.chatModel, SummaryModel: o.summaryModel}
	return cfg, nil
}

// shards are the storage the router runs over, as its mode opened them.
type shards struct {
	close func()      // releases them after the router stopped
	disc  *discoverer // discovery mode; nil otherwise
	every time.Duration
}

// openShards fills cfg's shards for the mode the flags chose: the
// daemons a DNS name resolves to, one BoltDB file, or the daemons of the
// config file. It returns nil, nil when ctx ended while it waited.
func (o *options) openShards(ctx context.Context, cfg *router.Config, sec *securitySetup, log *slog.Logger) (*shards, error) {
	sh := &shards{close: func() {}, every: o.discoverEvery}
	switch {
	case o.discover != "":
		sh.disc = newDiscoverer(o.discover, o.resolve, sec.storageClient(), log)
		// A new cluster starts with the daemons compose is starting, not
		// with whichever answered first; an existing one keeps its map.
		nodes, err := sh.disc.wait(ctx, o.replicas, 30*time.Second, time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil
			}
			return nil, err
		}
		sh.disc.configure(cfg, nodes, o.replicas)
		log.Info("discovery mode", "target", o.discover, "shards", len(nodes), "replicas", o.replicas)
	case o.configFile == "":
		vs := metrics.NewVectorSearch(cfg.Registry)
		ks := metrics.NewKeywordSearch(cfg.Registry)
		store, err := storage.Open(o.dbLocation, storage.Options{LockTimeout: 2 * time.Second, SearchObserver: vs.Observe, KeywordObserver: ks.Observe})
		if err != nil {
			return nil, err
		}
		metrics.RegisterVectorIndex(cfg.Registry, daemon.VectorIndexStats(store))
		daemon.RegisterKeywordIndex(cfg.Registry, store)
		sh.close = func() { store.Close() }
		cfg.Mode = "single"
		sec.local = true
		cfg.Nodes = []router.Node{{Name: "local", Address: o.dbLocation, Shard: store}}
		log.Info("single-node mode", "db", o.dbLocation)
	default:
		cc, err := cluster.Load(o.configFile)
		if err != nil {
			return nil, &daemon.UsageError{Err: err}
		}
		// One transport for all shards: its pool keeps connections alive.
		hc := sec.storageClient()
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
		cfg.NewShard = func(name, addr string) router.Shard { return storage.NewClient(name, addr, hc) }
		cfg.Reload = func() ([]router.Node, int, error) {
			cc, err := cluster.Load(o.configFile)
			if err != nil {
				return nil, 0, err
			}
			return nodesOf(cc), cc.Replicas, nil
		}
		log.Info("sharded mode", "config", o.configFile, "shards", len(cc.Shards), "replicas", cc.Replicas)
	}
	return sh, nil
}

// follow, in discovery mode, resolves the name again every interval and
// reloads the router when daemons come or go; the function it returns
// stops that and waits.
func (sh *shards) follow(ctx context.Context, rt *router.Router) (stop func()) {
	if sh.disc == nil {
		return func() {}
	}
	wctx, cancel := context.WithCancel(ctx)
	wait := sh.disc.watch(wctx, sh.every, rt.Reload)
	return func() {
		cancel()
		wait()
	}
}

// onHangup runs fn on every SIGHUP until ctx ends or the function it
// returns is called (which waits for a running fn).
func onHangup(ctx context.Context, fn func()) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-hup:
				fn()
			case <-quit:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(quit)
		<-done
	}
}
