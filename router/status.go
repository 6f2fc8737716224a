package router

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// opStatus is the progress of a repair or a rebalance, as /api/v1/cluster
// shows it.
type opStatus struct {
	Kind        string     `json:"kind"`
	Phase       string     `json:"phase"`
	Running     bool       `json:"running"`
	StartedAt   time.Time  `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	KeysScanned int64      `json:"keys_scanned"`
	KeysCopied  int64      `json:"keys_copied"`
	BytesCopied int64      `json:"bytes_copied"`
	KeysPurged  int64      `json:"keys_purged"`
	KeysMissing int64      `json:"keys_missing"` // owners down: left for a later pass
	Errors      int64      `json:"errors"`
	LastError   string     `json:"last_error,omitempty"`
}

// syncStatus holds the latest repair and rebalance, and feeds the
// matching Prometheus counters.
type syncStatus struct {
	mu  sync.Mutex // guards ops
	ops map[string]*opStatus

	scanned, copied, bytes, purged, errors *prometheus.CounterVec
}

func (s *syncStatus) get(kind string) *opStatus {
	if s.ops == nil {
		s.ops = map[string]*opStatus{}
	}
	op := s.ops[kind]
	if op == nil {
		op = &opStatus{Kind: kind}
		s.ops[kind] = op
	}
	return op
}

func (s *syncStatus) start(kind, phase string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ops != nil {
		delete(s.ops, kind)
	}
	op := s.get(kind)
	op.Phase, op.Running, op.StartedAt = phase, true, time.Now().UTC()
}

func (s *syncStatus) phase(kind, phase string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.get(kind).Phase = phase
}

func (s *syncStatus) running(kind string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.get(kind).Running
}

func (s *syncStatus) add(kind string, r passResult, errs int64) {
	s.mu.Lock()
	op := s.get(kind)
	op.KeysScanned += r.scanned
	op.KeysCopied += r.copied
	op.BytesCopied += r.bytes
	op.KeysPurged += r.purged
	op.KeysMissing += r.missing
	op.Errors += errs
	s.mu.Unlock()
	if s.scanned != nil {
		s.scanned.WithLabelValues(kind).Add(float64(r.scanned))
		s.copied.WithLabelValues(kind).Add(float64(r.copied))
		s.bytes.WithLabelValues(kind).Add(float64(r.bytes))
		s.purged.WithLabelValues(kind).Add(float64(r.purged))
		s.errors.WithLabelValues(kind).Add(float64(errs))
	}
}

func (s *syncStatus) fail(kind string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.get(kind).LastError = err.Error()
}

func (s *syncStatus) finish(kind string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	op := s.ops[kind]
	if op == nil || !op.Running {
		return // finished already, or never started
	}
	now := time.Now().UTC()
	op.Running, op.Phase, op.FinishedAt = false, "done", &now
}

func (s *syncStatus) snapshot(kind string) *opStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ops == nil || s.ops[kind] == nil {
		return nil
	}
	cp := *s.ops[kind]
	return &cp
}

func (r *Router) registerStatusMetrics(reg prometheus.Registerer) {
	vec := func(name, help string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kvdb", Subsystem: "sync", Name: name, Help: help}, []string{"kind"})
		reg.MustRegister(c)
		return c
	}
	r.status.scanned = vec("keys_scanned_total", "Keys examined by repair and rebalance passes.")
	r.status.copied = vec("keys_copied_total", "Keys copied to an owner that lacked their newest version.")
	r.status.bytes = vec("bytes_copied_total", "Bytes of keys and values copied between shards.")
	r.status.purged = vec("keys_purged_total", "Records removed from shards that no longer own them, and collected tombstones.")
	r.status.errors = vec("errors_total", "Repair and rebalance passes that failed.")
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "kvdb", Subsystem: "sync", Name: "rebalance_running",
		Help: "1 while a rebalance moves data, else 0.",
	}, func() float64 {
		if r.status.running("rebalance") {
			return 1
		}
		return 0
	}))
}

// requestRepair asks the repair loop for a pass soon; requests coalesce.
func (r *Router) requestRepair() {
	select {
	case r.repairs <- struct{}{}:
	default:
	}
}

// repairLoop runs a pass when asked and every RepairInterval.
func (r *Router) repairLoop(ctx context.Context) {
	tick := time.NewTicker(r.cfg.RepairInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.repairs:
		case <-tick.C:
		}
		r.repair(ctx)
	}
}

// repair runs one anti-entropy pass (or drives a rebalance under way).
func (r *Router) repair(ctx context.Context) (*opStatus, error) {
	// Until the router has loaded the cluster map it knows only the config
	// file's Shape, at epoch 0: shards that hold a map refuse its copies,
	// and its owners may not be the cluster's. Wait for the map.
	for r.topo.Load().Epoch == 0 {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(r.cfg.ProbeInterval / 10):
		}
	}
	if t := r.topo.Load(); t.State != placement.StateStable {
		r.converge(ctx)
		return r.status.snapshot("rebalance"), nil
	}
	r.syncMu.Lock()
	t := r.topo.Load()
	var wasUp []*placement.Node
	for _, n := range t.All {
		if n.Up() {
			wasUp = append(wasUp, n)
		}
	}
	r.status.start("repair", "repair")
	res, err := r.syncPass(ctx, t, "repair")
	if err != nil {
		r.status.fail("repair", err)
	} else if res.missing == 0 {
		for _, n := range wasUp {
			n.Health.Repaired()
		}
	}
	r.status.finish("repair")
	r.syncMu.Unlock()
	r.converge(ctx) // a reload may have arrived meanwhile
	return r.status.snapshot("repair"), err
}

// ---- admin and cluster endpoints ----

type clusterShard struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	State   string `json:"state"` // up, down, joining, leaving
	NodeID  string `json:"node_id,omitempty"`
	Epoch   uint64 `json:"epoch"` // of the cluster map the shard holds
	Error   string `json:"error,omitempty"`
}

type clusterInfo struct {
	Mode      string         `json:"mode"`
	Epoch     uint64         `json:"epoch"`
	State     string         `json:"state"`
	Replicas  int            `json:"replicas"`
	Shards    []clusterShard `json:"shards"`
	Rebalance *opStatus      `json:"rebalance,omitempty"`
	Repair    *opStatus      `json:"repair,omitempty"`
}

func (r *Router) clusterInfo() clusterInfo {
	t := r.topo.Load()
	info := clusterInfo{Mode: r.cfg.Mode, Epoch: t.Epoch, State: t.State, Replicas: t.Cur.Replicas,
		Rebalance: r.status.snapshot("rebalance"), Repair: r.status.snapshot("repair")}
	for _, n := range t.All {
		info.Shards = append(info.Shards, clusterShard{Name: n.Name, Address: liveAddress(n), State: t.NodeState(n),
			NodeID: n.Health.NodeID(), Epoch: n.Health.Epoch(), Error: n.Health.LastErr()})
	}
	return info
}

func (r *Router) cluster(c echo.Context) error {
	return c.JSON(http.StatusOK, r.clusterInfo())
}

// adminRepair starts a repair pass; with ?wait=true it runs it and answers
// with its outcome.
func (r *Router) adminRepair(c echo.Context) error {
	if c.QueryParam("wait") == "true" {
		st, err := r.repair(c.Request().Context())
		if err != nil {
			return &apierr.Error{Code: apierr.CodeUnavailable, Message: "repair failed: " + err.Error(), Err: err}
		}
		return c.JSON(http.StatusOK, map[string]any{"repair": st})
	}
	r.requestRepair()
	return c.JSON(http.StatusAccepted, map[string]any{"repair": r.status.snapshot("repair")})
}

// adminReload re-reads the configuration and starts a rebalance if the
// Shape changed.
func (r *Router) adminReload(c echo.Context) error {
	if err := r.Reload(); err != nil {
		return apierr.Errorf(apierr.CodeFailedPrecondition, "%v", err)
	}
	return c.JSON(http.StatusAccepted, r.clusterInfo())
}

func (r *Router) ready(c echo.Context) error {
	t := r.topo.Load()
	for _, sh := range t.Shapes() {
		down := 0
		var names []string
		for _, n := range sh.Ring.Nodes() {
			if !n.Up() {
				down++
				names = append(names, n.Name)
			}
		}
		if down > sh.Replicas-placement.Quorum(sh.Replicas) {
			return apierr.Errorf(apierr.CodeUnavailable, "shards unreachable: %v", names)
		}
	}
	return c.JSONBlob(http.StatusOK, []byte(`{"status":"ready"}`))
}
