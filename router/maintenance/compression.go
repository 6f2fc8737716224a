package maintenance

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
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

// ---- status ----

// compressionStatus is the answer of GET /api/v1/admin/compression.
type compressionStatus struct {
	Current      *codec.Pointer `json:"current"`
	Dictionaries []uint32       `json:"dictionaries"`
}

// ---- training ----

// TrainResult is the answer of a training.
type TrainResult struct {
	ID              uint32         `json:"id"`
	Samples         int            `json:"samples"`          // bodies sampled
	SampleBytes     int64          `json:"sample_bytes"`     // their size (each cut to 16 KiB)
	Measured        int            `json:"measured"`         // held out of training, to measure with
	DictionaryBytes int            `json:"dictionary_bytes"` // the dictionary's size
	RatioBefore     float64        `json:"ratio_before"`     // stored body bytes / JSON bytes of the held-out bodies, plain zstd
	RatioAfter      float64        `json:"ratio_after"`      // the same with the new dictionary
	TrainedAt       time.Time      `json:"trained_at"`
	Rewrite         *RewriteResult `json:"rewrite,omitempty"` // with ?rewrite=true
}

// train samples, builds, checks, stores and adopts a dictionary.
func (s *Service) train(ctx context.Context) (*TrainResult, error) {
	t := s.cfg.Cluster.Topology()
	if err := coord.AllUp(t, "train a compression dictionary"); err != nil {
		return nil, err
	}
	samples, err := s.sampleBodies(ctx, t)
	if err != nil {
		return nil, err
	}
	if len(samples) < TrainMinSamples {
		return nil, apierr.Errorf(apierr.CodeFailedPrecondition, "only %d stored context bodies to learn from (at least %d are needed): store more contexts and train again", len(samples), TrainMinSamples)
	}
	res := &TrainResult{Samples: len(samples), TrainedAt: time.Now().UTC()}
	var learn, measure [][]byte
	for i, s := range samples {
		res.SampleBytes += int64(len(s))
		if i%trainHoldOut == trainHoldOut-1 {
			measure = append(measure, s)
		} else {
			learn = append(learn, s)
		}
	}
	res.Measured = len(measure)
	id, err := s.cfg.Codec.NewDictID()
	if err != nil {
		return nil, err
	}
	// One dictionary per minimum match length tried; the held-out bodies
	// pick the one that stores them in the fewest bytes.
	var raw []byte
	var buildErrs []string
	for _, hashBytes := range codec.DictHashBytes {
		cand, err := codec.BuildDict(learn, id, hashBytes)
		if err != nil {
			buildErrs = append(buildErrs, err.Error())
			continue
		}
		before, after, err := s.cfg.Codec.MeasureDict(cand, id, measure)
		if err != nil {
			return nil, &apierr.Error{Code: apierr.CodeInternal, Message: "check the new dictionary", Err: err}
		}
		if raw == nil || after < res.RatioAfter {
			raw, res.RatioBefore, res.RatioAfter = cand, before, after
		}
	}
	if raw == nil {
		return nil, apierr.Errorf(apierr.CodeFailedPrecondition, "no dictionary could be built from %d stored bodies: %s", len(learn), strings.Join(buildErrs, "; "))
	}
	res.ID, res.DictionaryBytes = id, len(raw)
	if res.RatioAfter >= res.RatioBefore {
		return nil, apierr.Errorf(apierr.CodeFailedPrecondition, "the trained dictionary does not improve compression of the held-out bodies (%.3f with it, %.3f without): not adopted", res.RatioAfter, res.RatioBefore)
	}
	if err := s.storeDict(ctx, t, id, raw); err != nil {
		return nil, err
	}
	if err := s.cfg.Codec.AddDict(id, raw); err != nil {
		return nil, &apierr.Error{Code: apierr.CodeInternal, Message: "load the new dictionary", Err: err}
	}
	p := &codec.Pointer{ID: id, TrainedAt: res.TrainedAt, Samples: res.Samples, DictionaryBytes: res.DictionaryBytes,
		RatioBefore: res.RatioBefore, RatioAfter: res.RatioAfter, Version: s.cfg.Clock.Next()}
	if err := s.cfg.Coord.WriteEverywhere(ctx, t, []byte(codec.DictCurrentKey), p.Version, schema.MustJSON(p), storage.CondNone,
		fmt.Sprintf("dictionary %d is stored on every shard but was not made current", id)); err != nil {
		return nil, err
	}
	if err := s.adoptPointer(p); err != nil {
		return nil, &apierr.Error{Code: apierr.CodeInternal, Message: "adopt the new dictionary", Err: err}
	}
	s.cfg.Metrics.DictionaryTrainings.Inc()
	s.cfg.Log.Info("compression dictionary trained", "id", id, "samples", res.Samples, "bytes", res.DictionaryBytes,
		"ratio_before", res.RatioBefore, "ratio_after", res.RatioAfter)
	return res, nil
}

// sampleBodies reads up to trainMaxSamples context bodies (content JSON,
// decompressed) from the shards of t: on each, a reservoir sample of the
// live contexts, scanned from a random point of the key space (at most
// trainScanLimit records a shard). A context held by several replicas
// counts once.
func (s *Service) sampleBodies(ctx context.Context, t *placement.Topology) ([][]byte, error) {
	per := (trainMaxSamples + len(t.All) - 1) / len(t.All)
	seen := map[string]bool{}
	var out [][]byte
	now := time.Now()
	for _, n := range t.All {
		var start [1]byte
		rand.Read(start[:])
		reservoir := make([][]byte, 0, per)
		scanned, budget := 0, trainScanLimit
		visit := func(rec storage.Record) error {
			if rec.Tombstone || seen[string(rec.Key)] || codec.StoredExpired(rec.Value, now) {
				return nil
			}
			seen[string(rec.Key)] = true
			scanned++
			slot := len(reservoir)
			if slot >= per {
				if slot = mrand.IntN(scanned); slot >= per {
					return nil
				}
			}
			body, err := s.cfg.Codec.ContentJSON(rec.Value)
			if err != nil {
				return nil // a corrupt record teaches nothing
			}
			if len(body) > trainSampleMax {
				body = body[:trainSampleMax]
			}
			body = bytes.Clone(body)
			if slot == len(reservoir) {
				reservoir = append(reservoir, body)
			} else {
				reservoir[slot] = body
			}
			return nil
		}
		// From the random point to the end, then from the start up to it.
		if err := s.scanContexts(ctx, n, start[:], nil, &budget, visit); err != nil {
			return nil, apierr.FromStorage("sample contexts on shard "+n.Name, err)
		}
		if err := s.scanContexts(ctx, n, nil, start[:], &budget, visit); err != nil {
			return nil, apierr.FromStorage("sample contexts on shard "+n.Name, err)
		}
		out = append(out, reservoir...)
	}
	mrand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	total := 0
	for i, b := range out {
		if total += len(b); total > trainMaxBytes {
			return out[:i], nil
		}
	}
	return out, nil
}

// scanContexts visits the contexts of shard n after key after (nil: from
// the start) up to key until (inclusive; nil: to the end), at most
// *budget of them (it counts them off).
func (s *Service) scanContexts(ctx context.Context, n *placement.Node, after, until []byte, budget *int, visit func(storage.Record) error) error {
	if *budget <= 0 {
		return nil
	}
	return placement.Walk(ctx, n.Shard, schema.BucketContexts, storage.ScanOptions{After: after, Limit: min(200, *budget)}, s.cfg.ShardTimeout, func(recs []storage.Record) error {
		for _, rec := range recs {
			if until != nil && bytes.Compare(rec.Key, until) > 0 || *budget <= 0 {
				return placement.ErrStop
			}
			*budget--
			if err := visit(rec); err != nil {
				return err
			}
		}
		return nil
	})
}

// storeDict writes a new dictionary to every shard, create-only.
func (s *Service) storeDict(ctx context.Context, t *placement.Topology, id uint32, raw []byte) error {
	return s.cfg.Coord.WriteEverywhere(ctx, t, codec.DictKey(id), s.cfg.Clock.Next(), codec.EncodeDictRecord(raw), storage.CondAbsent,
		fmt.Sprintf("dictionary %d could not be stored on every shard, so it was not made current", id))
}

// ---- rewrite ----

// RewriteResult is what a rewrite pass did.
type RewriteResult struct {
	Dictionary  uint32    `json:"dictionary"`   // the dictionary bodies are now compressed with
	Scanned     int64     `json:"scanned"`      // live contexts read
	Rewritten   int64     `json:"rewritten"`    // re-encoded in place
	Current     int64     `json:"current"`      // already under the dictionary (or not worth changing)
	Changed     int64     `json:"changed"`      // rewritten by a client meanwhile: left to that write
	Failed      int64     `json:"failed"`       // unreadable (see errors)
	BytesBefore int64     `json:"bytes_before"` // stored value bytes of the contexts rewritten, before
	BytesAfter  int64     `json:"bytes_after"`  // ... and after
	Errors      []string  `json:"errors,omitempty"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
}

// rewrite walks the contexts of every live shard and re-encodes, with
// storage.CondRewrite (same version, only if the record is still the one
// read), each whose body is not under the current dictionary. The
// document a context renders does not change by a byte: metadata and
// embeddings are copied, the body decompressed and compressed again.
func (s *Service) rewrite(ctx context.Context) RewriteResult {
	res := RewriteResult{Dictionary: s.cfg.Codec.Current(), Start: time.Now().UTC()}
	for _, n := range s.cfg.Cluster.Topology().All {
		if !n.Up() {
			res.Errors = append(res.Errors, "shard "+n.Name+" is down: run the pass again when it is back")
			continue
		}
		if err := s.rewriteShard(ctx, n, &res); err != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("shard %s: %v", n.Name, err))
		}
	}
	res.End = time.Now().UTC()
	return res
}

func (s *Service) rewriteShard(ctx context.Context, n *placement.Node, res *RewriteResult) error {
	kr := s.cfg.Keyring
	now := time.Now()
	type sizes struct{ before, after int }
	// Read as stored; write through n.Shard, which seals.
	return rewritePass(ctx, s, rawShard(n), n.Shard, schema.BucketContexts, func(rec storage.Record) ([]byte, sizes, bool) {
		plain, err := kr.Open(schema.BucketContexts, rec.Key, rec.Value)
		if err != nil {
			res.Failed++
			res.Errors = appendCapped(res.Errors, err.Error())
			return nil, sizes{}, false
		}
		if codec.StoredExpired(plain, now) {
			return nil, sizes{}, false
		}
		res.Scanned++
		out, changed, err := s.cfg.Codec.Recompress(plain)
		if err != nil {
			res.Failed++
			res.Errors = appendCapped(res.Errors, fmt.Sprintf("context %s: %v", schema.PrintableKey(rec.Key), err))
			return nil, sizes{}, false
		}
		if !changed {
			res.Current++
			return nil, sizes{}, false
		}
		return out, sizes{len(plain), len(out)}, true
	}, func(s sizes, applied bool) {
		if !applied {
			res.Changed++
			return
		}
		res.Rewritten++
		res.BytesBefore += int64(s.before)
		res.BytesAfter += int64(s.after)
	})
}

// appendCapped keeps the first 20 error messages of a pass.
func appendCapped(list []string, msg string) []string {
	if len(list) >= 20 {
		return list
	}
	return append(list, msg)
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

// Train samples, builds, checks, stores and adopts a dictionary; with
// rewrite it then re-encodes every context with it (see Rewrite).
func (s *Service) Train(ctx context.Context, rewrite bool) (*TrainResult, error) {
	if !s.training.TryLock() {
		return nil, apierr.Errorf(apierr.CodeFailedPrecondition, "a training is running already")
	}
	defer s.training.Unlock()
	res, err := s.train(ctx)
	if err != nil {
		return nil, err
	}
	if rewrite {
		rw, ok := runPass(s, &s.rewriting, ctx, true, s.rewrite, nil)
		if !ok {
			return nil, apierr.Errorf(apierr.CodeFailedPrecondition, "dictionary %d is current, but a rewrite pass is running already: run it again once that one ends", res.ID)
		}
		res.Rewrite = rw
	}
	return res, nil
}

// Rewrite runs the compression rewrite pass: at once with wait (its
// result), else in the background (started false: one is running; with
// wait that is failed_precondition).
func (s *Service) Rewrite(ctx context.Context, wait bool) (res *RewriteResult, started bool, err error) {
	if s.cfg.Codec.Current() == 0 {
		return nil, false, apierr.Errorf(apierr.CodeFailedPrecondition, "no compression dictionary is current: train one first (POST /api/v1/admin/compression/train)")
	}
	res, started = runPass(s, &s.rewriting, ctx, wait, s.rewrite, func(res RewriteResult) {
		s.cfg.Log.Info("compression rewrite pass done", "dictionary", res.Dictionary, "scanned", res.Scanned,
			"rewritten", res.Rewritten, "bytes_before", res.BytesBefore, "bytes_after", res.BytesAfter, "errors", len(res.Errors))
	})
	if wait && !started {
		return nil, false, apierr.Errorf(apierr.CodeFailedPrecondition, "a rewrite pass is running already")
	}
	return res, started, nil
}
