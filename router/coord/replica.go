package coord

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"golang.org/x/sync/errgroup"
)

// Get reads the newest version of a key from a Quorum of its replicas.
// A key no replica holds is storage.ErrNotFound; a tombstone is returned as
// a record with Tombstone set. Replicas found behind are repaired in the
// background.
func (c *Coordinator) Get(ctx context.Context, pk, bucket string, key []byte) (storage.Record, error) {
	t := c.cfg.Topology()
	rec, err := c.ReadSet(ctx, t, t.Owners(pk), bucket, key)
	if err == nil {
		c.cfg.Clock.Observe(rec.Version)
		if rec.Version == 0 {
			return rec, storage.ErrNotFound
		}
	}
	return rec, err
}

type answer[T any] struct {
	node *placement.Node
	val  T
	err  error
}

// askQuorum asks every live replica of set at once and returns the answers
// of the first that make a Quorum of each group, or why they could not: a
// record held but not opened (see codec's sealing) is said as such, not as
// "unavailable"; otherwise 503 naming op and what failed.
func askQuorum[T any](ctx context.Context, c *Coordinator, set placement.ReplicaSet, op string, ask func(context.Context, *placement.Node) (T, error)) ([]answer[T], error) {
	ctx, cancel := c.ShardCtx(ctx)
	defer cancel()
	answers := make(chan answer[T], len(set.Union))
	asked := 0
	for _, n := range set.Union {
		if !n.Up() {
			continue
		}
		asked++
		go func() {
			v, err := ask(ctx, n)
			answers <- answer[T]{node: n, val: v, err: err}
		}()
	}
	var got []answer[T]
	var failed []string
	var unreadable *apierr.Error
	answered := func(n *placement.Node) bool {
		return slices.ContainsFunc(got, func(a answer[T]) bool { return a.node == n })
	}
	for range asked {
		a := <-answers
		if a.err != nil {
			failed = append(failed, a.node.Name+": "+a.err.Error())
			if unreadable == nil {
				errors.As(a.err, &unreadable)
			}
			continue
		}
		got = append(got, a)
		if Quorate(set, answered) {
			return got, nil
		}
	}
	c.cfg.Metrics.QuorumFailures.WithLabelValues("read").Inc()
	if unreadable != nil {
		return nil, unreadable
	}
	return nil, c.NoQuorum(op, set, len(got), failed)
}

// ReadSet asks every live replica in set and returns once each group has a
// Quorum of answers, with the newest record (Version 0 when none holds it).
func (c *Coordinator) ReadSet(ctx context.Context, t *placement.Topology, set placement.ReplicaSet, bucket string, key []byte) (storage.Record, error) {
	if len(set.Union) == 1 {
		n := set.Union[0]
		ctx, cancel := c.ShardCtx(ctx)
		defer cancel()
		rec, err := n.Shard.Get(ctx, bucket, key)
		if errors.Is(err, storage.ErrNotFound) {
			return storage.Record{Key: key}, nil
		}
		if err != nil {
			return rec, apierr.FromStorage("read from shard "+n.Name, err)
		}
		return rec, nil
	}
	got, err := askQuorum(ctx, c, set, "read", func(ctx context.Context, n *placement.Node) (storage.Record, error) {
		rec, err := n.Shard.Get(ctx, bucket, key)
		if errors.Is(err, storage.ErrNotFound) {
			return storage.Record{Key: key}, nil
		}
		return rec, err
	})
	if err != nil {
		return storage.Record{}, err
	}
	newest := got[0].val
	for _, a := range got[1:] {
		if a.val.Version > newest.Version {
			newest = a.val
		}
	}
	if newest.Version != 0 {
		for _, a := range got {
			if a.val.Version < newest.Version {
				c.readRepair(t, a.node, bucket, newest)
			}
		}
	}
	return newest, nil
}

// Quorate reports whether every group of set has a Quorum of nodes for
// which ok holds.
func Quorate(set placement.ReplicaSet, ok func(*placement.Node) bool) bool {
	for _, g := range set.Groups {
		n := 0
		for _, node := range g {
			if ok(node) {
				n++
			}
		}
		if n < placement.Quorum(len(g)) {
			return false
		}
	}
	return true
}

func (c *Coordinator) NoQuorum(op string, set placement.ReplicaSet, got int, failed []string) *apierr.Error {
	var down []string
	for _, n := range set.Union {
		if !n.Up() {
			down = append(down, n.Name+" (down)")
		}
	}
	need := 0
	for _, g := range set.Groups {
		need = max(need, placement.Quorum(len(g)))
	}
	msg := fmt.Sprintf("%s reached %d of %d replicas, %d needed", op, got, len(set.Groups[0]), need)
	if len(down)+len(failed) > 0 {
		msg += ": " + strings.Join(append(down, failed...), "; ")
	}
	return &apierr.Error{Code: apierr.CodeUnavailable, Message: msg}
}

// readRepair writes the newest record to a replica found behind. It runs in
// the background: the read has its answer already.
func (c *Coordinator) readRepair(t *placement.Topology, n *placement.Node, bucket string, rec storage.Record) {
	c.cfg.Metrics.ReadRepairs.Inc()
	c.cfg.Go(func(ctx context.Context) {
		ctx, cancel := c.ShardCtx(EpochCtx(ctx, t))
		defer cancel()
		_, err := n.Shard.Apply(ctx, bucket, []storage.Write{{Record: rec}})
		if err != nil {
			c.cfg.Log.Debug("read repair failed", "shard", n.Name, "err", err)
		}
	})
}

// Write stores one record on the key's replicas with a fresh version and
// returns the outcome and the version written. It succeeds when a Quorum
// of every owner group acknowledged; otherwise it answers 503 and the
// partial write, if any, is left for repair: never reported as success.
//
// A conditional write is decided by one replica, the key's primary (its
// first live, repaired owner): the router reads the newest version from a
// Quorum, checks the condition against it, and applies at the primary only
// if the primary still holds exactly that version; then it replicates. So
// concurrent conditional writes on a key serialise at its primary.
func (c *Coordinator) Write(ctx context.Context, pk, bucket string, key []byte, tombstone bool, value []byte, cond storage.Cond, match uint64) (storage.Result, uint64, error) {
	return c.write(ctx, pk, bucket, key, tombstone, value, cond, match, nil)
}

// WriteTxn is Write of key with the records with beside it (other keys,
// placed with key at pk, any bucket), which get the version written and go
// in the same transaction on every owner: all of them land with key, or
// none does. A conversation's append is one: its header, written iff it is
// still at the version the router read (decided at the primary as Write
// decides), and the new message records. The replicas apply the
// transaction without conditions, put-if-newer. The result is key's.
func (c *Coordinator) WriteTxn(ctx context.Context, pk, bucket string, key []byte, value []byte, cond storage.Cond, match uint64, with []storage.TxnWrite) (storage.Result, uint64, error) {
	if len(with) == 0 {
		return c.Write(ctx, pk, bucket, key, false, value, cond, match)
	}
	return c.write(ctx, pk, bucket, key, false, value, cond, match, with)
}

// txnOf is the transaction of head with the records with, all at head's
// version (with nil: none, a plain write).
func txnOf(bucket string, head storage.Write, with []storage.TxnWrite) []storage.TxnWrite {
	txn := make([]storage.TxnWrite, 0, 1+len(with))
	txn = append(txn, storage.TxnWrite{Bucket: bucket, Write: head})
	for _, w := range with {
		w.Version, w.Cond, w.Match = head.Version, storage.CondNone, 0
		txn = append(txn, w)
	}
	return txn
}

// apply sends head (and, when with is set, the records beside it in one
// transaction) to n and returns head's result.
func apply(ctx context.Context, n *placement.Node, bucket string, head storage.Write, with []storage.TxnWrite) ([]storage.Result, error) {
	if with == nil {
		return n.Shard.Apply(ctx, bucket, []storage.Write{head})
	}
	return n.Shard.Txn(ctx, txnOf(bucket, head, with))
}

func (c *Coordinator) write(ctx context.Context, pk, bucket string, key []byte, tombstone bool, value []byte, cond storage.Cond, match uint64, with []storage.TxnWrite) (storage.Result, uint64, error) {
	var d decision // set once some replica may hold the write
	var res storage.Result
	var v uint64
	err := c.Settle(ctx, writeOf(key), func(t *placement.Topology) error {
		set := t.Owners(pk)
		var err error
		if len(set.Union) == 1 && d.rec.Version == 0 {
			res, v, err = c.writeOne(ctx, t, set.Union[0], bucket, key, tombstone, value, cond, match, with)
		} else {
			res, v, err = c.writeReplicated(ctx, t, set, &d, bucket, key, tombstone, value, cond, match, with)
		}
		return err
	})
	if err != nil {
		return storage.Result{}, 0, err
	}
	return res, v, nil
}

// decision is a replicated write once it has been decided (its condition
// checked and applied at the primary, or its version chosen) and sent to
// replicas. If the cluster map then moves on (ErrStaleEpoch), the write is
// replicated again under the new map with the same record and outcome: it
// is never decided again, which would find the write itself (a create
// would answer 409, an If-Match 412, a delete 404, though each applied).
type decision struct {
	rec      storage.Record     // Version 0: nothing decided yet
	with     []storage.TxnWrite // the records beside rec (WriteTxn), at its version
	result   storage.Result
	prevLive uint64 // newest live version the replicas reported before rec
}

func (c *Coordinator) writeOne(ctx context.Context, t *placement.Topology, n *placement.Node, bucket string, key []byte, tombstone bool, value []byte, cond storage.Cond, match uint64, with []storage.TxnWrite) (storage.Result, uint64, error) {
	ctx, cancel := c.ShardCtx(EpochCtx(ctx, t))
	defer cancel()
	v := c.cfg.Clock.Next()
	res, err := apply(ctx, n, bucket, storage.Write{
		Record: storage.Record{Key: key, Version: v, Tombstone: tombstone, Value: value},
		Cond:   cond, Match: match,
	}, with)
	if errors.Is(err, storage.ErrStaleEpoch) {
		return storage.Result{}, 0, err
	}
	if err != nil {
		return storage.Result{}, 0, apierr.FromStorage("write to shard "+n.Name, err)
	}
	if res[0].Outcome == storage.Stale {
		c.cfg.Clock.Observe(res[0].PrevVersion)
		return storage.Result{}, 0, ErrRetry
	}
	return res[0], v, nil
}

func (c *Coordinator) writeReplicated(ctx context.Context, t *placement.Topology, set placement.ReplicaSet, d *decision, bucket string, key []byte, tombstone bool, value []byte, cond storage.Cond, match uint64, with []storage.TxnWrite) (storage.Result, uint64, error) {
	rec := storage.Record{Key: key, Tombstone: tombstone, Value: value}
	acked := map[*placement.Node]bool{}
	var result storage.Result
	if d.rec.Version != 0 {
		rec, result, with = d.rec, d.result, d.with // decided under an older map: replicate it again
	} else if cond != storage.CondNone {
		cur, err := c.ReadSet(ctx, t, set, bucket, key)
		if err != nil {
			return storage.Result{}, 0, err
		}
		result = storage.Result{Outcome: storage.Applied, PrevVersion: cur.Version, PrevTombstone: cur.Tombstone}
		if !condHolds(cond, match, cur) {
			result.Outcome = storage.Conflict
			return result, 0, nil
		}
		primary := set.Union[0]
		if !primary.Up() {
			c.cfg.Metrics.QuorumFailures.WithLabelValues("write").Inc()
			return storage.Result{}, 0, primaryDown(primary)
		}
		c.cfg.Clock.Observe(cur.Version)
		rec.Version = c.cfg.Clock.Next()
		pctx, cancel := c.ShardCtx(EpochCtx(ctx, t))
		res, err := apply(pctx, primary, bucket, storage.Write{Record: rec, Cond: storage.CondExact, Match: cur.Version}, with)
		cancel()
		switch {
		case errors.Is(err, storage.ErrStaleEpoch):
			return storage.Result{}, 0, err
		case errors.Is(err, storage.ErrUnavailable) && ctx.Err() == nil:
			// Dead or hung. No other owner may decide instead: see primary.
			c.cfg.Metrics.QuorumFailures.WithLabelValues("write").Inc()
			return storage.Result{}, 0, primaryDown(primary)
		case err != nil:
			return storage.Result{}, 0, apierr.FromStorage("write to primary "+primary.Name, err)
		case res[0].Outcome == storage.Conflict && res[0].PrevVersion < cur.Version:
			// The primary is behind the Quorum: bring it up to date, retry.
			rctx, cancel := c.ShardCtx(EpochCtx(ctx, t))
			primary.Shard.Apply(rctx, bucket, []storage.Write{{Record: cur}})
			cancel()
			return storage.Result{}, 0, ErrRetry
		case res[0].Outcome != storage.Applied:
			// A newer write reached the primary meanwhile: decide again.
			c.cfg.Clock.Observe(res[0].PrevVersion)
			return storage.Result{}, 0, ErrRetry
		}
		acked[primary] = true
	} else {
		rec.Version = c.cfg.Clock.Next()
		result.Outcome = storage.Applied
	}
	d.rec, d.result, d.with = rec, result, with
	prevLive, err := c.replicate(ctx, t, set, bucket, rec, with, acked)
	d.prevLive = max(d.prevLive, prevLive)
	if err != nil {
		return storage.Result{}, 0, err
	}
	if cond == storage.CondNone {
		result.PrevVersion, result.PrevTombstone = d.prevLive, false
	}
	return result, rec.Version, nil
}

// condHolds checks a write condition against the newest record.
func condHolds(cond storage.Cond, match uint64, cur storage.Record) bool {
	live := cur.Version != 0 && !cur.Tombstone
	switch cond {
	case storage.CondAbsent:
		return !live
	case storage.CondExists:
		return live
	case storage.CondVersion:
		return live && cur.Version == match
	case storage.CondExact:
		return cur.Version == match
	}
	return true
}

// primaryDown is the answer of a conditional write whose key's primary
// cannot be reached.
//
// A conditional write (a create, an If-Match, an append) is decided by one
// owner of its key, the primary: the first owner of the key's replica set,
// the same for every router that works under the same cluster map. It is
// never handed to another owner while the primary is down. Two routers
// that disagreed on which owner to ask (one saw the primary fail, the
// other did not) would let two owners each decide a write on the same
// version, and both would be acknowledged: the one with the older version
// would be lost (TestWriteTxnTwoPrimaries). So while the primary is down
// these writes answer 503 and the client retries; unconditional writes and
// reads go on with a Quorum of the others.
func primaryDown(n *placement.Node) error {
	return &apierr.Error{Code: apierr.CodeUnavailable, Message: fmt.Sprintf("shard %s, which decides conditional writes (creates, If-Match, appends) of this key, is unavailable; retry: unconditional writes and reads are still served", n.Name)}
}

type writeAnswer struct {
	node *placement.Node
	res  storage.Result
	err  error
}

// Replicate sends rec to every live replica not yet in acked and returns
// once each group has a Quorum of acknowledgements. Sends still under way
// then finish in the background, so slow replicas get the write too.
// prevLive is the newest version the replicas held before, if that was a
// live record (0: none, or deleted).
func (c *Coordinator) Replicate(ctx context.Context, t *placement.Topology, set placement.ReplicaSet, bucket string, rec storage.Record, acked map[*placement.Node]bool) (prevLive uint64, err error) {
	return c.replicate(ctx, t, set, bucket, rec, nil, acked)
}

// replicate is Replicate of rec with the records beside it, in one
// transaction per replica (with nil: rec alone).
func (c *Coordinator) replicate(ctx context.Context, t *placement.Topology, set placement.ReplicaSet, bucket string, rec storage.Record, with []storage.TxnWrite, acked map[*placement.Node]bool) (prevLive uint64, err error) {
	answers := make(chan writeAnswer, len(set.Union))
	sent := 0
	for _, n := range set.Union {
		if acked[n] || !n.Up() {
			continue
		}
		sent++
		c.cfg.Go(func(bg context.Context) {
			wctx, cancel := c.ShardCtx(EpochCtx(bg, t))
			defer cancel()
			res, err := apply(wctx, n, bucket, storage.Write{Record: rec}, with)
			a := writeAnswer{node: n, err: err}
			if err == nil {
				a.res = res[0]
			}
			answers <- a
		})
	}
	var failed []string
	staleEpoch := false
	var prevNewest uint64 // the newest version any replica held before rec
	var prevTomb bool     // ... and whether it was a tombstone
	isAcked := func(n *placement.Node) bool { return acked[n] }
	for i := 0; i < sent && !Quorate(set, isAcked); i++ {
		var a writeAnswer
		select {
		case a = <-answers:
		case <-ctx.Done():
			return 0, apierr.Errorf(apierr.CodeUnavailable, "write abandoned: %v", ctx.Err())
		}
		switch {
		case errors.Is(a.err, storage.ErrStaleEpoch):
			staleEpoch = true
			failed = append(failed, a.node.Name+": "+a.err.Error())
		case a.err != nil:
			failed = append(failed, a.node.Name+": "+a.err.Error())
		default:
			// Stale means the replica holds this version or a newer one:
			// it has the write, or a later one that supersedes it.
			acked[a.node] = true
			if p := a.res.PrevVersion; p != rec.Version && p > prevNewest {
				prevNewest, prevTomb = p, a.res.PrevTombstone
			}
		}
	}
	if !prevTomb {
		prevLive = prevNewest // a replica behind on a delete does not make it live
	}
	if Quorate(set, isAcked) {
		return prevLive, nil
	}
	if staleEpoch {
		return prevLive, storage.ErrStaleEpoch
	}
	c.cfg.Metrics.QuorumFailures.WithLabelValues("write").Inc()
	return 0, c.NoQuorum("write", set, len(acked), failed)
}

// WriteAt writes key, placed at pk, at exactly version v on a Quorum of
// its replicas (a record that follows another one's version, like a
// context's vector). A newer record held wins silently.
func (c *Coordinator) WriteAt(ctx context.Context, pk, bucket string, key []byte, v uint64, tombstone bool, value []byte) error {
	rec := storage.Record{Key: key, Version: v, Tombstone: tombstone, Value: value}
	return c.Settle(ctx, writeOf(key), func(t *placement.Topology) error {
		_, err := c.Replicate(ctx, t, t.Owners(pk), bucket, rec, map[*placement.Node]bool{})
		return err
	})
}

// writeOf names a write of key in a message.
func writeOf(key []byte) func() string {
	return func() string { return "write of " + strconv.Quote(schema.Truncate(string(key))) }
}

// WriteTxnAt writes records, all placed at pk, at exactly version v in one
// transaction on a Quorum of their replicas, put-if-newer (a record newer
// than v held wins silently), as WriteAt writes one: the message records
// a conversation's header will point to, written before it, and the
// tombstones that purge a replaced conversation's records.
func (c *Coordinator) WriteTxnAt(ctx context.Context, pk string, v uint64, records []storage.TxnWrite) error {
	if len(records) == 0 {
		return nil
	}
	head := records[0]
	rec := head.Record
	rec.Version = v
	rest := records[1:len(records):len(records)]
	return c.Settle(ctx, writeOf(rec.Key), func(t *placement.Topology) error {
		_, err := c.replicate(ctx, t, t.Owners(pk), head.Bucket, rec, rest, map[*placement.Node]bool{})
		return err
	})
}

// GetMany is Get of many keys (key i placed at pks[i]) in one MultiGet per
// replica set rather than one Get per key: a search reads its matches'
// contexts with it. A key no replica holds comes back with Version 0.
func (c *Coordinator) GetMany(ctx context.Context, bucket string, keys [][]byte, pks []string) ([]storage.Record, error) {
	t := c.cfg.Topology()
	type group struct {
		set placement.ReplicaSet
		idx []int
	}
	groups := map[string]*group{}
	var order []string
	for i := range keys {
		set := t.Owners(pks[i])
		var id strings.Builder
		for _, g := range set.Groups {
			for _, n := range g {
				id.WriteString(n.Name)
				id.WriteByte(',')
			}
			id.WriteByte(';')
		}
		g := groups[id.String()]
		if g == nil {
			g = &group{set: set}
			groups[id.String()] = g
			order = append(order, id.String())
		}
		g.idx = append(g.idx, i)
	}
	out := make([]storage.Record, len(keys))
	eg, ectx := errgroup.WithContext(ctx)
	for _, id := range order {
		g := groups[id]
		ks := make([][]byte, len(g.idx))
		for j, i := range g.idx {
			ks[j] = keys[i]
		}
		eg.Go(func() error {
			got, err := askQuorum(ectx, c, g.set, "read", func(ctx context.Context, n *placement.Node) ([]storage.Record, error) {
				if r, ok := placement.As[placement.OpenReader](n.Shard); ok {
					return r.MultiGetOpen(ctx, bucket, ks)
				}
				return n.Shard.MultiGet(ctx, bucket, ks)
			})
			if err != nil {
				return err
			}
			for j, i := range g.idx {
				newest := got[0].val[j]
				for _, a := range got[1:] {
					if a.val[j].Version > newest.Version {
						newest = a.val[j]
					}
				}
				for _, a := range got {
					if newest.Version != 0 && a.val[j].Version < newest.Version {
						c.readRepair(t, a.node, bucket, newest)
					}
				}
				c.cfg.Clock.Observe(newest.Version)
				out[i] = newest
			}
			return nil
		})
	}
	return out, eg.Wait()
}
