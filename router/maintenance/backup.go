package maintenance

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-kvdb/go-kvdb/backup"
	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"golang.org/x/sync/errgroup"
)

// Backup and restore. GET /api/v1/admin/backup streams a consistent
// snapshot of every shard (each taken in one read transaction on its
// shard; see storage.Store.Snapshot) in the backup package's stream
// format, while writes go on. POST /api/v1/admin/restore replays records
// with their own versions to their owners under the current Placement,
// put-if-newer like every write a shard applies: restoring twice, or into
// a cluster that holds newer data, never overwrites anything newer. The
// archive file around the stream, with its manifest and checksums, is the
// client's (see package client and kvdbctl).

const (
	// MaxRestoreBody bounds one restore request: a batch of records, not a
	// whole archive (the client sends an archive in batches).
	MaxRestoreBody = 96 << 20
	// restoreChunk bounds the writes of one Apply call to a shard, in
	// records and in bytes.
	restoreChunk      = 1000
	restoreChunkBytes = 8 << 20
	// restoreParallel bounds the calls to shards one restore runs at once.
	restoreParallel = 8
)

// Snapshotter is what a backup needs of a shard beside placement.Shard:
// storage.Store and storage.Client have it.
type Snapshotter interface {
	Snapshot(ctx context.Context) (io.ReadCloser, error)
}

var errNoSnapshot = errors.New("this shard cannot take snapshots")

// snapshotOf finds the snapshot method under the router's own wrappers
// (metrics, encryption): a backup carries records exactly as the shard
// stores them, sealed values included, and a restore hands them back
// through the same wrappers, which leave sealed values as they are.
func snapshotOf(sh placement.Shard) (Snapshotter, bool) { return placement.As[Snapshotter](sh) }

// RestoreReport is the answer of a restore: how many of the records sent
// were stored (in a dry run: would be) and how many were skipped because
// the cluster holds the same version or a newer one.
type RestoreReport struct {
	DryRun  bool                      `json:"dry_run"`
	Records int64                     `json:"records"`
	Applied int64                     `json:"applied"`
	Skipped int64                     `json:"skipped"`
	Buckets map[string]*RestoreCounts `json:"buckets"`
}

type RestoreCounts struct {
	Records int64 `json:"records"`
	Applied int64 `json:"applied"`
	Skipped int64 `json:"skipped"`
}

// Record is one record of a restore body, of the bucket it belongs to.
type Record struct {
	bucket string
	rec    storage.Record
}

// Restore writes recs (or, in a dry run, compares them) under the current
// Placement, planning again when the cluster map moved on meanwhile.
// Compression dictionaries go first, to every shard (see restoreDicts).
func (s *Service) Restore(ctx context.Context, recs []Record, dry bool) (*RestoreReport, error) {
	var dicts []storage.Record
	others := recs[:0:0]
	for _, rr := range recs {
		if rr.bucket == schema.BucketDicts {
			dicts = append(dicts, rr.rec)
		} else {
			others = append(others, rr)
		}
	}
	dictApplied, err := s.restoreDicts(ctx, s.cfg.Cluster.Topology(), dicts, dry)
	if err != nil {
		return nil, err
	}
	if len(dicts) > 0 && !dry {
		for _, d := range dicts {
			s.cfg.Clock.Observe(d.Version) // a later training must win over a restored pointer
		}
		// Adopt what was restored now, not at the next reload: the records
		// that follow may need it, and a newer current pointer applies.
		if err := s.loadDicts(ctx, true); err != nil {
			s.cfg.Log.Warn("restored compression dictionaries not loaded yet", "err", err)
		}
	}
	var rep *RestoreReport
	err = s.cfg.Coord.Settle(ctx, func() string { return "restore (restoring is idempotent)" }, func(t *placement.Topology) error {
		rep, err = s.restoreOn(ctx, t, others, dry)
		return err
	})
	if err != nil {
		return nil, err
	}
	addRestored(rep, schema.BucketDicts, dicts, dictApplied)
	return rep, nil
}

// addRestored counts records of bucket restored outside restoreOn.
func addRestored(rep *RestoreReport, bucket string, recs []storage.Record, applied []bool) {
	if len(recs) == 0 {
		return
	}
	bc := rep.Buckets[bucket]
	if bc == nil {
		bc = &RestoreCounts{}
		rep.Buckets[bucket] = bc
	}
	for i := range recs {
		rep.Records++
		bc.Records++
		if applied[i] {
			rep.Applied++
			bc.Applied++
		} else {
			rep.Skipped++
			bc.Skipped++
		}
	}
}

// restoreOn sends each record to every live owner, with its own version
// and no condition, in batches per shard and bucket. A record counts as
// applied if any owner stored it. Each record must reach a Quorum of its
// owners, as a write must, or the request fails (503) and may be retried:
// what did land is newer-wins and stays correct.
func (s *Service) restoreOn(ctx context.Context, t *placement.Topology, recs []Record, dry bool) (*RestoreReport, error) {
	sets := make([]placement.ReplicaSet, len(recs))
	work := map[*placement.Node]map[string][]int{} // node → bucket → indexes into recs
	for i, rr := range recs {
		sets[i] = t.Owners(schema.PlacementOf(rr.rec.Key))
		for _, n := range sets[i].Union {
			if !n.Up() {
				continue
			}
			if work[n] == nil {
				work[n] = map[string][]int{}
			}
			work[n][rr.bucket] = append(work[n][rr.bucket], i)
		}
	}
	var (
		mu         sync.Mutex // guards the slices below, failed and staleEpoch
		answered   = make([][]*placement.Node, len(recs))
		newest     = make([]uint64, len(recs)) // dry run: the newest version held
		applied    = make([]bool, len(recs))
		failed     []string
		staleEpoch bool
	)
	var g errgroup.Group
	g.SetLimit(restoreParallel)
	for n, byBucket := range work {
		for bucket, idx := range byBucket {
			for _, chunk := range restoreChunks(recs, idx) {
				g.Go(func() error {
					sctx, cancel := s.cfg.Coord.ShardCtx(coord.EpochCtx(ctx, t))
					defer cancel()
					var err error
					if dry {
						keys := make([][]byte, len(chunk))
						for j, i := range chunk {
							keys[j] = recs[i].rec.Key
						}
						var got []storage.Record
						if got, err = n.Shard.MultiGet(sctx, bucket, keys); err == nil {
							mu.Lock()
							for j, i := range chunk {
								newest[i] = max(newest[i], got[j].Version)
								answered[i] = append(answered[i], n)
							}
							mu.Unlock()
						}
					} else {
						writes := make([]storage.Write, len(chunk))
						for j, i := range chunk {
							writes[j] = storage.Write{Record: recs[i].rec}
						}
						var res []storage.Result
						if res, err = n.Shard.Apply(sctx, bucket, writes); err == nil {
							mu.Lock()
							for j, i := range chunk {
								applied[i] = applied[i] || res[j].Outcome == storage.Applied
								answered[i] = append(answered[i], n)
							}
							mu.Unlock()
						}
					}
					if err != nil {
						mu.Lock()
						failed = append(failed, n.Name+": "+err.Error())
						staleEpoch = staleEpoch || errors.Is(err, storage.ErrStaleEpoch)
						mu.Unlock()
					}
					return nil
				})
			}
		}
	}
	g.Wait()
	if staleEpoch {
		return nil, storage.ErrStaleEpoch
	}
	for i := range recs {
		if !coord.Quorate(sets[i], func(n *placement.Node) bool { return slices.Contains(answered[i], n) }) {
			s.cfg.Metrics.QuorumFailures.WithLabelValues("write").Inc()
			e := s.cfg.Coord.NoQuorum("restore of "+recs[i].bucket+" "+schema.Truncate(strings.ToValidUTF8(string(recs[i].rec.Key), "?")), sets[i], len(answered[i]), failed)
			e.Message += "; records already written stay (restoring again is safe)"
			return nil, e
		}
	}
	rep := &RestoreReport{DryRun: dry, Records: int64(len(recs)), Buckets: map[string]*RestoreCounts{}}
	var newestSeen uint64
	for i, rr := range recs {
		bc := rep.Buckets[rr.bucket]
		if bc == nil {
			bc = &RestoreCounts{}
			rep.Buckets[rr.bucket] = bc
		}
		bc.Records++
		ok := applied[i]
		if dry {
			ok = rr.rec.Version > newest[i]
		}
		if ok {
			bc.Applied++
			rep.Applied++
		} else {
			bc.Skipped++
			rep.Skipped++
		}
		if !dry && applied[i] {
			newestSeen = max(newestSeen, rr.rec.Version)
			// The cache may hold what the restored record superseded.
			s.cfg.Docs.Superseded(rr.bucket, rr.rec.Key, rr.rec.Version)
		}
	}
	// Later writes of this router must be newer than what it restored.
	s.cfg.Clock.Observe(newestSeen)
	return rep, nil
}

// restoreChunks cuts the records at idx into batches for one Apply.
func restoreChunks(recs []Record, idx []int) [][]int {
	var out [][]int
	start, size := 0, 0
	for j, i := range idx {
		n := len(recs[i].rec.Key) + len(recs[i].rec.Value) + 32
		if j > start && (j-start == restoreChunk || size+n > restoreChunkBytes) {
			out = append(out, idx[start:j])
			start, size = j, 0
		}
		size += n
	}
	if start < len(idx) {
		out = append(out, idx[start:])
	}
	return out
}

// Backup streams a backup of the cluster (GET /api/v1/admin/backup). Every shard that serves
// reads is asked for its snapshot at once (so they are taken at about the
// same moment), then they are relayed one after the other, each checked
// as it passes. Before the answer starts, a failure is an ordinary error
// answer; after, it is an error frame that ends the stream, which a
// reader cannot mistake for a complete backup.
// begin is called once every snapshot is open, and returns where the
// stream goes (the handler sets its headers then).
func (s *Service) Backup(ctx context.Context, begin func() io.Writer) error {
	t := s.cfg.Cluster.Topology()
	nodes, err := s.cfg.Coord.LiveReadNodes(t)
	if err != nil {
		return err
	}
	rcs := make([]io.ReadCloser, len(nodes))
	defer func() {
		for _, rc := range rcs {
			if rc != nil {
				rc.Close()
			}
		}
	}()
	var g errgroup.Group // not WithContext: the snapshots outlive Wait
	for i, n := range nodes {
		g.Go(func() error {
			ss, ok := snapshotOf(n.Shard)
			if !ok {
				return apierr.Errorf(apierr.CodeUnavailable, "snapshot of shard %s: %v", n.Name, errNoSnapshot)
			}
			rc, err := ss.Snapshot(ctx)
			if err != nil {
				return apierr.FromStorage("snapshot of shard "+n.Name, err)
			}
			rcs[i] = rc
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	info := backup.Info{CreatedAt: time.Now().UTC(), Mode: s.cfg.Mode, Epoch: t.Epoch, State: t.State, Replicas: t.Cur.Replicas}
	for _, n := range nodes {
		info.Shards = append(info.Shards, n.Name)
	}
	sw, err := backup.NewStreamWriter(begin(), info)
	if err != nil {
		return nil // the client is gone
	}
	start := time.Now()
	var total int64
	for i, n := range nodes {
		st, err := sw.Section(n.Name, rcs[i])
		if err != nil {
			s.cfg.Log.Error("backup broken off", "shard", n.Name, "err", err)
			sw.Fail("snapshot of shard " + n.Name + ": " + err.Error())
			return nil
		}
		total += st.Records
		rcs[i].Close()
		rcs[i] = nil
	}
	if err := sw.End(); err == nil {
		s.cfg.Log.Info("backup streamed", "shards", len(nodes), "records", total, "took", time.Since(start))
	}
	return nil
}

// ParseRestore reads a restore body (a snapshot in backup's format) whole
// and checks it: nothing is written from a truncated or malformed body.
// body should be bounded by MaxRestoreBody (an *http.MaxBytesError past
// it is payload_too_large).
func ParseRestore(body io.Reader) ([]Record, error) {
	var recs []Record
	_, err := backup.ReadSnapshot(body, "restore body", func(bucket string, rec backup.Record) error {
		if bucket == storage.ClusterBucket {
			return apierr.Errorf(apierr.CodeInvalidArgument, "bucket %q cannot be restored: the cluster map belongs to the cluster", bucket)
		}
		if bucket == schema.BucketDicts {
			if err := codec.CheckRestoredDictKey(rec.Key); err != nil {
				return err
			}
		}
		recs = append(recs, Record{bucket: bucket, rec: storage.Record{Key: rec.Key, Version: rec.Version, Tombstone: rec.Tombstone, Value: rec.Value}})
		return nil
	})
	var apiErr *apierr.Error
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
	case errors.As(err, &apiErr):
		return nil, apiErr
	case errors.As(err, &tooLarge):
		return nil, apierr.Errorf(apierr.CodePayloadTooLarge, "restore body exceeds the limit of %d bytes: send the records in batches", MaxRestoreBody)
	case errors.Is(err, backup.ErrTruncated), errors.Is(err, backup.ErrCorrupt):
		return nil, apierr.Errorf(apierr.CodeInvalidArgument, "%v; nothing was restored", err)
	default:
		return nil, apierr.Errorf(apierr.CodeInvalidArgument, "read the restore body: %v; nothing was restored", err)
	}
	return recs, nil
}
