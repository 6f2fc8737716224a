package maintenance

import (
	"context"
	"fmt"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/cluster"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// MultiGet returns records as the shard holds them, sealed: it serves
// repair and rebalance, which copy records between shards without
// looking inside (see Apply).

// ---- re-encryption ----

// ReencryptResult is what a re-encrypt pass did.
type ReencryptResult struct {
	Key        string    `json:"key"`         // the key id records are now sealed with
	Scanned    int64     `json:"scanned"`     // live records read
	Resealed   int64     `json:"resealed"`    // rewritten under the current key
	Current    int64     `json:"current"`     // already under it
	MissingKey int64     `json:"missing_key"` // sealed with a key the file lacks: left as they are
	Changed    int64     `json:"changed"`     // rewritten by a client meanwhile (so already current)
	Errors     []string  `json:"errors,omitempty"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
}

// reencrypt walks every bucket on every live shard and re-seals, in place
// and at the same version (storage.CondRewrite), each record not sealed
// with the current key. A record rewritten meanwhile is left alone: the
// new write was sealed with the current key.
func (s *Service) reencrypt(ctx context.Context, kr *codec.Keyring) ReencryptResult {
	res := ReencryptResult{Key: kr.CurrentID(), Start: time.Now().UTC()}
	for _, n := range s.cfg.Cluster.Topology().All {
		if !n.Up() {
			res.Errors = append(res.Errors, "shard "+n.Name+" is down: run the pass again when it is back")
			continue
		}
		raw := rawShard(n)
		for _, bucket := range append([]string{schema.BucketDicts}, cluster.Buckets...) {
			if err := s.reencryptBucket(ctx, kr, raw, bucket, &res); err != nil {
				res.Errors = append(res.Errors, fmt.Sprintf("shard %s, bucket %s: %v", n.Name, bucket, err))
			}
		}
	}
	res.End = time.Now().UTC()
	return res
}

func (s *Service) reencryptBucket(ctx context.Context, kr *codec.Keyring, sh placement.Shard, bucket string, res *ReencryptResult) error {
	return rewritePass(ctx, s, sh, sh, bucket, func(rec storage.Record) ([]byte, struct{}, bool) {
		res.Scanned++
		if kr.SealedWithCurrent(rec.Value) {
			res.Current++
			return nil, struct{}{}, false
		}
		plain, err := kr.Open(bucket, rec.Key, rec.Value)
		if err != nil {
			res.MissingKey++
			return nil, struct{}{}, false
		}
		return kr.Seal(bucket, rec.Key, plain), struct{}{}, true
	}, func(_ struct{}, applied bool) {
		if applied {
			res.Resealed++
		} else {
			res.Changed++
		}
	})
}

// rewritePass rewrites records of bucket on one shard in place, at the
// same version: it reads pages through read (records as stored), asks fix
// for each live record's new value (ok false: leave it; tag is passed on
// to done), and writes through write with storage.CondRewrite, so a record
// written meanwhile keeps that write; done hears whether each write
// applied. Writes are throttled by -sync-rate like repair's. The
// re-encrypt and compression-rewrite passes are both this walk.
func rewritePass[T any](ctx context.Context, s *Service, read, write placement.Shard, bucket string,
	fix func(rec storage.Record) (value []byte, tag T, ok bool), done func(tag T, applied bool)) error {
	return placement.Walk(ctx, read, bucket, storage.ScanOptions{Limit: cluster.PageSize}, s.cfg.ShardTimeout, func(recs []storage.Record) error {
		var writes []storage.Write
		var tags []T
		for _, rec := range recs {
			if rec.Tombstone || len(rec.Value) == 0 {
				continue
			}
			value, tag, ok := fix(rec)
			if !ok {
				continue
			}
			writes = append(writes, storage.Write{Record: storage.Record{Key: rec.Key, Version: rec.Version, Value: value}, Cond: storage.CondRewrite})
			tags = append(tags, tag)
		}
		if len(writes) == 0 {
			return nil
		}
		if err := s.cfg.Cluster.Throttle(ctx, len(writes)); err != nil {
			return err
		}
		wctx, cancel := s.cfg.Coord.ShardCtx(ctx)
		results, err := write.Apply(wctx, bucket, writes)
		cancel()
		if err != nil {
			return err
		}
		for i, out := range results {
			done(tags[i], out.Outcome == storage.Applied)
		}
		return nil
	})
}

// rawShard is a node's shard below the sealing layer: what it holds, as
// it holds it.
func rawShard(n *placement.Node) placement.Shard { return placement.Base(n.Shard) }

// Reencrypt runs the re-encrypt pass under the keyring (see Rewrite for
// wait and started). Without a keyring it is failed_precondition.
func (s *Service) Reencrypt(ctx context.Context, wait bool) (res *ReencryptResult, started bool, err error) {
	kr := s.cfg.Keyring
	if kr == nil {
		return nil, false, apierr.Errorf(apierr.CodeFailedPrecondition, "this router has no -encryption-key-file: nothing to re-encrypt with")
	}
	run := func(ctx context.Context) ReencryptResult { return s.reencrypt(ctx, kr) }
	res, started = runPass(s, &s.reencrypting, ctx, wait, run, func(res ReencryptResult) {
		s.cfg.Log.Info("re-encrypt pass done", "key", res.Key, "scanned", res.Scanned, "resealed", res.Resealed,
			"missing_key", res.MissingKey, "errors", len(res.Errors))
	})
	if wait && !started {
		return nil, false, apierr.Errorf(apierr.CodeFailedPrecondition, "a re-encrypt pass is running already")
	}
	return res, started, nil
}
