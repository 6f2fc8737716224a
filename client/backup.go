package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/go-kvdb/go-kvdb/backup"
)

// DefaultRestoreBatch is the size of the batches Restore sends.
const DefaultRestoreBatch = 4 << 20

// BackupStream opens the router's backup stream (GET
// /api/v1/admin/backup, see package backup); the caller closes it.
// Backup is what most callers want.
func (c *Client) BackupStream(ctx context.Context) (io.ReadCloser, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: pathOf("admin", "backup")})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Backup takes an online backup of the whole cluster and writes it to w
// as an archive (see backup.WriteArchive): a consistent snapshot of each
// shard, checked as it arrives, with a manifest of counts and checksums.
// progress, when not nil, is told the snapshot bytes received so far. On
// an error w holds an incomplete archive: write to a temporary file and
// rename it on success.
func (c *Client) Backup(ctx context.Context, w io.Writer, progress func(bytes int64)) (*backup.Manifest, error) {
	body, err := c.BackupStream(ctx)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	m, err := backup.WriteArchive(w, body, progress)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return m, nil
}

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// DryRun reports what would change without writing anything.
	DryRun bool
	// BatchBytes is the size of each request; zero means
	// DefaultRestoreBatch.
	BatchBytes int
	// Verified is called once the archive has been verified, with its
	// manifest, before anything is sent.
	Verified func(*backup.Manifest)
	// Progress, when not nil, is told how many records were sent so far.
	Progress func(records int64)
}

// Restore replays an archive into the cluster: each record with its own
// version, to its owners under the cluster's current shape, stored only
// if newer than what they hold. Restoring twice, or into newer data,
// therefore overwrites nothing newer.
//
// The whole archive is verified first (structure, counts, checksums); a
// truncated or corrupted one is refused and nothing is sent. Then it is
// read again and sent in batches. An error after that (a shard down) may
// leave part of it restored: run Restore again, which is safe.
func (c *Client) Restore(ctx context.Context, archive io.ReadSeeker, opts RestoreOptions) (*RestoreReport, error) {
	m, err := backup.Verify(archive)
	if err != nil {
		return nil, fmt.Errorf("restore refused, nothing was sent: %w", err)
	}
	if opts.Verified != nil {
		opts.Verified(m)
	}
	if _, err := archive.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("restore: rewind the archive: %w", err)
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = DefaultRestoreBatch
	}
	total := &RestoreReport{DryRun: opts.DryRun, Buckets: map[string]*RestoreCounts{}}
	b := batcher{max: opts.BatchBytes}
	var sent int64
	flush := func() error {
		body, n := b.take()
		if n == 0 {
			return nil
		}
		rep, err := c.restoreBatch(ctx, body, opts.DryRun)
		if err != nil {
			return err
		}
		total.add(rep)
		sent += n
		if opts.Progress != nil {
			opts.Progress(sent)
		}
		return nil
	}
	_, err = backup.ReadArchive(archive, func(_, bucket string, rec backup.Record) error {
		if b.full(bucket, len(rec.Key)+len(rec.Value)) {
			if err := flush(); err != nil {
				return err
			}
		}
		return b.add(bucket, &rec)
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return total, fmt.Errorf("restore (%d records sent, restoring again is safe): %w", sent, err)
	}
	return total, nil
}

func (c *Client) restoreBatch(ctx context.Context, body []byte, dry bool) (*RestoreReport, error) {
	q := url.Values{}
	if dry {
		q.Set("dry_run", "true")
	}
	resp, err := c.send(ctx, request{method: http.MethodPost, path: pathOf("admin", "restore"), query: q,
		body: bytes.NewReader(body), ctype: backup.RecordsContentType})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var rep RestoreReport
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return nil, fmt.Errorf("restore answer: %w", err)
	}
	return &rep, nil
}

// batcher builds restore request bodies: snapshots of at most max bytes
// (or one record, if larger), each bucket appearing once per snapshot.
type batcher struct {
	max     int
	buf     bytes.Buffer
	sw      *backup.SnapshotWriter
	buckets map[string]bool
	bucket  string
	size    int
	n       int64
}

// full reports whether a record of size bytes in bucket must go in the
// next batch.
func (b *batcher) full(bucket string, size int) bool {
	if b.n == 0 {
		return false
	}
	return b.size+size > b.max || (bucket != b.bucket && b.buckets[bucket])
}

func (b *batcher) add(bucket string, rec *backup.Record) error {
	if b.sw == nil {
		b.buf.Reset()
		b.sw = backup.NewSnapshotWriter(&b.buf)
		b.buckets = map[string]bool{}
		b.bucket = ""
	}
	if bucket != b.bucket {
		if err := b.sw.Bucket(bucket); err != nil {
			return err
		}
		b.bucket = bucket
		b.buckets[bucket] = true
	}
	b.size += len(rec.Key) + len(rec.Value) + 32
	b.n++
	return b.sw.Record(rec)
}

// take returns the batch built so far and starts a new one.
func (b *batcher) take() ([]byte, int64) {
	if b.sw == nil || b.n == 0 {
		return nil, 0
	}
	b.sw.Close()
	n := b.n
	b.sw, b.size, b.n = nil, 0, 0
	return b.buf.Bytes(), n
}
