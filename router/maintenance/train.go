package maintenance

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

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
