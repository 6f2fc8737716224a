package maintenance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/cluster"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// Trained compression dictionaries. Chat contexts repeat the same JSON
// keys, roles, system prompts and phrases from one document to the next,
// which zstd cannot exploit when it compresses each document alone. POST
// /api/v1/admin/compression/train samples stored bodies, builds a zstd
// dictionary from them (github.com/klauspost/compress/dict), stores it on
// every shard and makes it current: new bodies are compressed with it
// (codec.ZstdDict, see router/codec), older ones stay readable as they are and
// POST /api/v1/admin/compression/rewrite re-encodes them in place.
//
// Records depend on their dictionary, so dictionaries are never lost and
// never change:
//   - each is written to every shard of the cluster (bucket
//     storage.DictBucket, key: its id in decimal) before it can be used,
//     with a create-only condition, so an id names one content for good;
//     training answers 503 and adopts nothing unless every shard took it;
//   - the bucket's key "current" names the dictionary new writes use (a
//     JSON record, newest version wins); it is written to every shard after
//     the dictionary itself;
//   - repair and rebalance copy the whole bucket to every live shard (a
//     shard that joins or comes back gets every dictionary: syncDicts);
//   - a backup carries the bucket first in each shard's snapshot, and a
//     restore writes its records to every shard before the batch's other
//     records;
//   - a router loads every dictionary and the current pointer when it
//     starts and on reload, reads the pointer again every repair interval,
//     and loads a dictionary it lacks the first time a record needs it.
//
// With encryption at rest, bodies are compressed and then sealed, and the
// dictionary records are sealed too (they are made of stored text).
//
// A dictionary record's value is
//
//	version 1 (1) | SHA-256 of the dictionary (32) | dictionary (zstd's format)
const (

	// TrainMinSamples: fewer stored bodies than this make no dictionary
	// worth having.
	TrainMinSamples = 50
	// trainMaxSamples and trainMaxBytes bound what a training reads and
	// feeds the builder; trainSampleMax cuts each body (the builder uses
	// the beginning of samples).
	trainMaxSamples = 2000
	trainMaxBytes   = 8 << 20
	trainSampleMax  = 16 << 10
	// trainScanLimit bounds the records a training reads on one shard.
	trainScanLimit = 50_000
	// trainHoldOut: every trainHoldOut-th sample is kept out of training
	// and measures the dictionary.
	trainHoldOut = 10
)

// RequestDictReload asks the compression loop to read the pointer again
// (full: every dictionary too).
func (s *Service) RequestDictReload(full bool) {
	if full {
		s.fullReload.Store(true)
	}
	select {
	case s.refresh <- struct{}{}:
	default:
	}
}

// compressionLoop loads the dictionaries once the cluster map is known
// (retrying until a Quorum of shards answers), then reads the current
// pointer again every repair interval and whenever asked.
func (s *Service) compressionLoop(ctx context.Context) {
	for s.cfg.Cluster.Topology().Epoch == 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.ProbeInterval / 10):
		}
	}
	for {
		err := s.loadDicts(ctx, true)
		if err == nil {
			break
		}
		if errors.Is(err, errNotAdopted) {
			// The shards answered; retrying at once would not help. Reads
			// of that dictionary's records fail and say why; the next
			// refresh (repair interval, reload) tries again.
			s.cfg.Log.Error("compression dictionaries loaded, but the current one cannot be used", "err", err)
			break
		}
		s.cfg.Log.Warn("compression dictionaries not loaded yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.ProbeInterval):
		}
	}
	tick := time.NewTicker(s.cfg.RepairInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.refresh:
		}
		if err := s.loadDicts(ctx, s.fullReload.Swap(false)); err != nil && ctx.Err() == nil {
			s.cfg.Log.Warn("compression dictionaries: reload failed", "err", err)
		}
	}
}

// loadDicts reads the current pointer from every live shard and adopts
// the newest if it is newer than the router's; with full it also loads
// every dictionary the shards hold. It fails when fewer than a majority of
// the shards answer.
func (s *Service) loadDicts(ctx context.Context, full bool) error {
	t := s.cfg.Cluster.Topology()
	var best *codec.Pointer
	answered := 0
	var errs []error
	for _, n := range t.All {
		if !n.Up() {
			continue
		}
		p, err := s.loadDictsFrom(ctx, n, full)
		if err != nil {
			errs = append(errs, fmt.Errorf("shard %s: %w", n.Name, err))
			continue
		}
		answered++
		if p != nil && (best == nil || p.Version > best.Version) {
			best = p
		}
	}
	if answered < placement.Quorum(len(t.All)) {
		return fmt.Errorf("%d of %d shards answered: %w", answered, len(t.All), errors.Join(errs...))
	}
	if best != nil {
		if err := s.adoptPointer(best); err != nil {
			return fmt.Errorf("%w: %v", errNotAdopted, err)
		}
	}
	return nil
}

// errNotAdopted: the shards name a current dictionary the router cannot
// load.
var errNotAdopted = errors.New("current compression dictionary not adopted")

func (s *Service) loadDictsFrom(ctx context.Context, n *placement.Node, full bool) (*codec.Pointer, error) {
	if !full {
		sctx, cancel := s.cfg.Coord.ShardCtx(ctx)
		rec, err := n.Shard.Get(sctx, schema.BucketDicts, []byte(codec.DictCurrentKey))
		cancel()
		if errors.Is(err, storage.ErrNotFound) || (err == nil && rec.Tombstone) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return codec.ParsePointer(rec)
	}
	var p *codec.Pointer
	err := placement.Walk(ctx, n.Shard, schema.BucketDicts, storage.ScanOptions{Limit: 64}, s.cfg.ShardTimeout, func(recs []storage.Record) error {
		for _, rec := range recs {
			if string(rec.Key) == codec.DictCurrentKey {
				var err error
				if p, err = codec.ParsePointer(rec); err != nil {
					return err
				}
				continue
			}
			id, ok := codec.ParseDictKey(rec.Key)
			if !ok {
				continue
			}
			if _, known := s.cfg.Codec.Dict(id); known {
				continue
			}
			raw, err := codec.ParseDictRecord(id, rec.Value)
			if err == nil {
				err = s.cfg.Codec.AddDict(id, raw)
			}
			if err != nil {
				// Another shard's copy may be sound: fetchDict tries them all.
				s.cfg.Log.Error("compression dictionary unreadable on a shard", "shard", n.Name, "err", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// adoptPointer makes p's dictionary current if p is newer than the
// pointer the router follows, loading the dictionary if needed.
func (s *Service) adoptPointer(p *codec.Pointer) error {
	s.adoptMu.Lock()
	defer s.adoptMu.Unlock()
	if cur := s.pointer.Load(); cur != nil && cur.Version >= p.Version {
		return nil
	}
	if _, err := s.cfg.Codec.DecoderFor(p.ID); err != nil {
		return fmt.Errorf("current dictionary %d: %w", p.ID, err)
	}
	if err := s.cfg.Codec.SetCurrent(p.ID); err != nil {
		return err
	}
	s.pointer.Store(p)
	s.cfg.Metrics.DictionaryID.Set(float64(p.ID))
	s.cfg.Log.Info("compression dictionary adopted", "id", p.ID, "trained_at", p.TrainedAt)
	return nil
}

// FetchDict loads dictionary id from the shards (the codec's fetch): any
// shard's sound copy will do, dictionaries being immutable. A dictionary
// the router did not know suggests a newer training: the pointer is read
// again in the background.
func (s *Service) FetchDict(id uint32) ([]byte, error) {
	ctx, cancel := context.WithTimeout(s.cfg.Context, s.cfg.ShardTimeout)
	defer cancel()
	t := s.cfg.Cluster.Topology()
	nodes := slices.Clone(t.All)
	slices.SortStableFunc(nodes, func(a, b *placement.Node) int { // live shards first
		switch {
		case a.Up() == b.Up():
			return 0
		case a.Up():
			return -1
		}
		return 1
	})
	var problems []string
	for _, n := range nodes {
		rec, err := n.Shard.Get(ctx, schema.BucketDicts, codec.DictKey(id))
		if errors.Is(err, storage.ErrNotFound) || (err == nil && rec.Tombstone) {
			continue
		}
		if err != nil {
			problems = append(problems, n.Name+": "+err.Error())
			continue
		}
		raw, err := codec.ParseDictRecord(id, rec.Value)
		if err != nil {
			problems = append(problems, n.Name+": "+err.Error())
			continue
		}
		s.RequestDictReload(false)
		return raw, nil
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: the record is compressed with dictionary %d, which no shard could provide (%s)", codec.ErrNoDict, id, strings.Join(problems, "; "))
	}
	return nil, fmt.Errorf("%w: the record is compressed with dictionary %d, which no shard holds (restore the dictionaries from a backup)", codec.ErrNoDict, id)
}

// ---- repair, rebalance and restore ----

// SyncDicts gives every live shard every record of the dictionary bucket
// it lacks (or holds older), copied as stored from a shard that has the
// newest: a shard that joins the cluster or comes back gets the
// dictionaries before records compressed with them can reach it through
// the pass. It returns how many records it copied.
func (s *Service) SyncDicts(ctx context.Context, live []*placement.Node) (int64, error) {
	type holding struct {
		source  *placement.Node
		version uint64
		held    map[*placement.Node]uint64
	}
	keys := map[string]*holding{}
	for _, n := range live {
		err := placement.Walk(ctx, n.Shard, schema.BucketDicts, storage.ScanOptions{Limit: cluster.PageSize, Tombstones: true, KeysOnly: true}, s.cfg.ShardTimeout, func(recs []storage.Record) error {
			for _, rec := range recs {
				h := keys[string(rec.Key)]
				if h == nil {
					h = &holding{held: map[*placement.Node]uint64{}}
					keys[string(rec.Key)] = h
				}
				h.held[n] = rec.Version
				if rec.Version > h.version {
					h.source, h.version = n, rec.Version
				}
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("scan %s on shard %s: %w", schema.BucketDicts, n.Name, err)
		}
	}
	var copied int64
	for k, h := range keys {
		var targets []*placement.Node
		for _, n := range live {
			if h.held[n] < h.version {
				targets = append(targets, n)
			}
		}
		if len(targets) == 0 {
			continue
		}
		gctx, cancel := s.cfg.Coord.ShardCtx(ctx)
		recs, err := h.source.Shard.MultiGet(gctx, schema.BucketDicts, [][]byte{[]byte(k)})
		cancel()
		if err != nil {
			return copied, fmt.Errorf("read %s/%s from shard %s: %w", schema.BucketDicts, k, h.source.Name, err)
		}
		if len(recs) != 1 || recs[0].Version == 0 {
			continue
		}
		for _, n := range targets {
			wctx, cancel := s.cfg.Coord.ShardCtx(ctx)
			res, err := n.Shard.Apply(wctx, schema.BucketDicts, []storage.Write{{Record: recs[0]}})
			cancel()
			if err != nil {
				return copied, fmt.Errorf("copy %s/%s to shard %s: %w", schema.BucketDicts, k, n.Name, err)
			}
			if res[0].Outcome == storage.Applied {
				copied++
			}
		}
	}
	return copied, nil
}

// restoreDicts writes restored dictionary records to every shard (put if
// newer), or in a dry run compares them with what every shard holds. A
// record counts as applied when some shard stored it (would store it).
// Every shard must be up and answer, else 503: the records that need the
// dictionaries may land anywhere.
func (s *Service) restoreDicts(ctx context.Context, t *placement.Topology, recs []storage.Record, dry bool) ([]bool, error) {
	applied := make([]bool, len(recs))
	if len(recs) == 0 {
		return applied, nil
	}
	if err := coord.AllUp(t, "restore compression dictionaries"); err != nil {
		return nil, err
	}
	keys := make([][]byte, len(recs))
	writes := make([]storage.Write, len(recs))
	for i, rec := range recs {
		keys[i], writes[i] = rec.Key, storage.Write{Record: rec}
	}
	for _, n := range t.All {
		sctx, cancel := s.cfg.Coord.ShardCtx(ctx)
		var err error
		if dry {
			var got []storage.Record
			if got, err = n.Shard.MultiGet(sctx, schema.BucketDicts, keys); err == nil {
				for i := range recs {
					applied[i] = applied[i] || recs[i].Version > got[i].Version
				}
			}
		} else {
			var res []storage.Result
			if res, err = n.Shard.Apply(sctx, schema.BucketDicts, writes); err == nil {
				for i := range recs {
					applied[i] = applied[i] || res[i].Outcome == storage.Applied
				}
			}
		}
		cancel()
		if err != nil {
			return nil, apierr.FromStorage("restore compression dictionaries to shard "+n.Name+" (they must reach every shard; restoring again is safe)", err)
		}
	}
	return applied, nil
}

// CompressionStatus is the answer of GET /api/v1/admin/compression.
type CompressionStatus struct {
	Current      *codec.Pointer `json:"current"`
	Dictionaries []uint32       `json:"dictionaries"`
}

// CompressionStatus says which dictionary is current and which are known.
func (s *Service) CompressionStatus() CompressionStatus {
	ids := s.cfg.Codec.DictIDs()
	slices.Sort(ids)
	return CompressionStatus{Current: s.pointer.Load(), Dictionaries: ids}
}
