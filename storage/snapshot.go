package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/go-kvdb/go-kvdb/backup"
	bolt "go.etcd.io/bbolt"
)

// pathSnapshot streams a consistent snapshot of the shard (see Snapshot).
const pathSnapshot = "/v1/snapshot"

// WriteSnapshot writes every record of every bucket but the shard's own
// (its identity, its change log and the cluster map) to w in the backup package's
// snapshot format, tombstones included, all read in one transaction: a
// consistent view of the shard at one moment. DictBucket comes first,
// the others in name order.
//
// The transaction stays open while w is written. BoltDB cannot grow its
// memory map while a read transaction is open, so a slow w would stall
// writers that need it to: Snapshot spools through a temporary file.
func (s *Store) WriteSnapshot(ctx context.Context, w io.Writer) (int64, error) {
	sw := backup.NewSnapshotWriter(w)
	bucket := func(name []byte, b *bolt.Bucket) error {
		if err := sw.Bucket(string(name)); err != nil {
			return err
		}
		c := b.Cursor()
		n := 0
		for k, raw := c.First(); k != nil; k, raw = c.Next() {
			if n++; n%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			v, tomb, val, err := parseStored(raw)
			if err != nil {
				return fmt.Errorf("bucket %s key %q: %w", name, k, err)
			}
			rec := backup.Record{Key: k, Version: v, Tombstone: tomb}
			if !tomb {
				rec.Value = val
			}
			if err := sw.Record(&rec); err != nil {
				return err
			}
		}
		return nil
	}
	err := s.view(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(DictBucket)); b != nil {
			if err := bucket([]byte(DictBucket), b); err != nil {
				return err
			}
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			switch string(name) {
			case metaBucket, changesBucket, ClusterBucket, DictBucket:
				return nil
			}
			if name[0] == '_' {
				return nil // the shard's own (keyword indexes): rebuilt by the replay
			}
			return bucket(name, b)
		})
	})
	if err != nil {
		return sw.Records(), fmt.Errorf("snapshot of %s: %w", s.path, err)
	}
	if err := sw.Close(); err != nil {
		return sw.Records(), fmt.Errorf("snapshot of %s: %w", s.path, err)
	}
	return sw.Records(), nil
}

// Snapshot takes a consistent snapshot (see WriteSnapshot) into a
// temporary file beside the database, so the read transaction lasts as
// long as the local copy and not as long as the reader, and returns a
// reader of it. The file is unlinked at once: closing the reader frees
// it, and a crash leaves nothing behind.
func (s *Store) Snapshot(ctx context.Context) (io.ReadCloser, error) {
	f, err := os.CreateTemp(filepath.Dir(s.path), ".snapshot-*")
	if err != nil {
		return nil, fmt.Errorf("snapshot of %s: spool file: %w", s.path, err)
	}
	os.Remove(f.Name())
	if _, err := s.WriteSnapshot(ctx, f); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("snapshot of %s: %w", s.path, err)
	}
	return f, nil
}

// snapshot serves GET /v1/snapshot. The answer starts at once (so the
// client's header timeout does not cover the spooling); a failure after
// that breaks the connection off, and the client sees a truncated
// snapshot, which the format makes unmistakable.
func (h *handler) snapshot(w http.ResponseWriter, r *http.Request) {
	if err := h.store.Ping(r.Context()); err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	rc, err := h.store.Snapshot(r.Context())
	if err != nil {
		h.log.Error("snapshot failed", "err", err)
		panic(http.ErrAbortHandler)
	}
	defer rc.Close()
	if _, err := io.Copy(w, rc); err != nil {
		h.log.Warn("snapshot not delivered", "err", err)
		panic(http.ErrAbortHandler)
	}
}

// Snapshot asks the daemon for a consistent snapshot of its shard and
// returns a reader of it (see Store.Snapshot). The caller closes it. The
// call is not bounded by a deadline of its own: ctx bounds it.
func (c *Client) Snapshot(ctx context.Context) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+pathSnapshot, nil)
	if err != nil {
		return nil, fmt.Errorf("shard %s: %v: %w", c.name, err, ErrInvalid)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("shard %s (%s): %v: %w", c.name, c.base, err, ErrUnavailable)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		err := ErrInternal
		switch resp.StatusCode {
		case http.StatusServiceUnavailable:
			err = ErrUnavailable
		case http.StatusUnauthorized:
			err = ErrUnauthenticated
		}
		return nil, fmt.Errorf("shard %s: snapshot: %s %s: %w", c.name, resp.Status, bytes.TrimSpace(body), err)
	}
	return &snapshotBody{rc: resp.Body, shard: c.name}, nil
}

// snapshotBody names the shard when the stream breaks off.
type snapshotBody struct {
	rc    io.ReadCloser
	shard string
}

func (b *snapshotBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("shard %s: snapshot: %v: %w", b.shard, err, ErrUnavailable)
	}
	return n, err
}

func (b *snapshotBody) Close() error { return b.rc.Close() }
