package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/prometheus/client_golang/prometheus"
)

// OpStatus is the progress of a repair or a rebalance, as /api/v1/cluster
// shows it.
type OpStatus struct {
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
	ops map[string]*OpStatus

	m *metrics.Sync // nil: not counted
}

func (s *syncStatus) get(kind string) *OpStatus {
	if s.ops == nil {
		s.ops = map[string]*OpStatus{}
	}
	op := s.ops[kind]
	if op == nil {
		op = &OpStatus{Kind: kind}
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

func (s *syncStatus) add(kind string, res passResult, errs int64) {
	s.mu.Lock()
	op := s.get(kind)
	op.KeysScanned += res.scanned
	op.KeysCopied += res.copied
	op.BytesCopied += res.bytes
	op.KeysPurged += res.purged
	op.KeysMissing += res.missing
	op.Errors += errs
	s.mu.Unlock()
	if s.m != nil {
		s.m.Scanned.WithLabelValues(kind).Add(float64(res.scanned))
		s.m.Copied.WithLabelValues(kind).Add(float64(res.copied))
		s.m.Bytes.WithLabelValues(kind).Add(float64(res.bytes))
		s.m.Purged.WithLabelValues(kind).Add(float64(res.purged))
		s.m.Errors.WithLabelValues(kind).Add(float64(errs))
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

func (s *syncStatus) snapshot(kind string) *OpStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ops == nil || s.ops[kind] == nil {
		return nil
	}
	cp := *s.ops[kind]
	return &cp
}

func (cl *Cluster) registerStatusMetrics(reg prometheus.Registerer) {
	cl.status.m = metrics.NewSync(reg, func() bool { return cl.status.running("rebalance") })
}

// RequestRepair asks the repair loop for a pass soon; requests coalesce.
func (cl *Cluster) RequestRepair() {
	select {
	case cl.repairs <- struct{}{}:
	default:
	}
}

// repairLoop runs a pass when asked and every RepairInterval.
func (cl *Cluster) repairLoop(ctx context.Context) {
	tick := time.NewTicker(cl.cfg.RepairInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-cl.repairs:
		case <-tick.C:
		}
		cl.Repair(ctx)
	}
}

// Repair runs one anti-entropy pass (or drives a rebalance under way).
func (cl *Cluster) Repair(ctx context.Context) (*OpStatus, error) {
	// Until the router has loaded the cluster map it knows only the config
	// file's Shape, at epoch 0: shards that hold a map refuse its copies,
	// and its owners may not be the cluster's. Wait for the map.
	for cl.topo.Load().Epoch == 0 {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(cl.cfg.ProbeInterval / 10):
		}
	}
	if t := cl.topo.Load(); t.State != placement.StateStable {
		cl.converge(ctx)
		return cl.status.snapshot("rebalance"), nil
	}
	cl.syncMu.Lock()
	t := cl.topo.Load()
	var wasUp []*placement.Node
	for _, n := range t.All {
		if n.Up() {
			wasUp = append(wasUp, n)
		}
	}
	cl.status.start("repair", "repair")
	res, err := cl.syncPass(ctx, t, "repair")
	if err != nil {
		cl.status.fail("repair", err)
	} else if res.missing == 0 {
		for _, n := range wasUp {
			n.Health.Repaired()
		}
	}
	cl.status.finish("repair")
	cl.syncMu.Unlock()
	cl.converge(ctx) // a reload may have arrived meanwhile
	return cl.status.snapshot("repair"), err
}

// ---- admin and cluster endpoints ----

type ShardInfo struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	State   string `json:"state"` // up, down, joining, leaving
	NodeID  string `json:"node_id,omitempty"`
	Epoch   uint64 `json:"epoch"` // of the cluster map the shard holds
	Error   string `json:"error,omitempty"`
}

type Info struct {
	Mode      string      `json:"mode"`
	Epoch     uint64      `json:"epoch"`
	State     string      `json:"state"`
	Replicas  int         `json:"replicas"`
	Shards    []ShardInfo `json:"shards"`
	Rebalance *OpStatus   `json:"rebalance,omitempty"`
	Repair    *OpStatus   `json:"repair,omitempty"`
}

func (cl *Cluster) Info() Info {
	t := cl.topo.Load()
	info := Info{Mode: cl.cfg.Mode, Epoch: t.Epoch, State: t.State, Replicas: t.Cur.Replicas,
		Rebalance: cl.status.snapshot("rebalance"), Repair: cl.status.snapshot("repair")}
	for _, n := range t.All {
		info.Shards = append(info.Shards, ShardInfo{Name: n.Name, Address: liveAddress(n), State: t.NodeState(n),
			NodeID: n.Health.NodeID(), Epoch: n.Health.Epoch(), Error: n.Health.LastErr()})
	}
	return info
}

// RepairStatus is the last (or running) repair pass's status, nil before
// the first.
func (cl *Cluster) RepairStatus() *OpStatus { return cl.status.snapshot("repair") }
