package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"
	bolt "go.etcd.io/bbolt"
)

// embeddingDims is the size of the embeddings row 10 stores.
const embeddingDims = 768

// sizeResult is row 10: what the router stores per context.
type sizeResult struct {
	contexts int
	raw      int64 // JSON bytes as the client sent them
	record   int64 // key + stored value (version, flags, the router's encoding)
	pages    int64 // BoltDB pages allocated to the contexts bucket
	zstd     int64 // each raw document compressed alone with zstd (default level): the baseline

	embDocs             int
	embWith, embWithout int64 // stored value bytes of the same documents with and without embeddings
	rawWith, rawWithout int64
	routerRSS           int64

	// With a trained dictionary: the same corpus stored through a router
	// that first stored a training corpus (other conversations, another
	// seed) and trained a dictionary on it.
	dict dictResult
}

// dictResult is row 10's dictionary run.
type dictResult struct {
	skipped     string // why there is no figure, when there is none
	trainDocs   int    // conversations of the training corpus
	id          uint32
	dictBytes   int     // the dictionary, stored once on every shard
	ratioBefore float64 // as the training measured on its held-out bodies
	ratioAfter  float64
	record      int64 // key + stored value of the measured corpus
}

// measureSize stores a chat corpus, and then documents with and without a
// 768-dim embedding, each through a fresh single-node router (the same
// codec and the same storage engine as a storaged, without a network hop
// in the way), stops it, and reads the BoltDB file. Measuring the records
// (key and value as BoltDB holds them) is exact and independent of what
// else the file ever held; the pages allocated to the bucket add BoltDB's
// own overhead (page headers, half-full pages after splits).
func (s *suite) measureSize(ctx context.Context) (*sizeResult, error) {
	res := &sizeResult{contexts: s.o.corpus, embDocs: min(200, max(20, s.o.corpus/10))}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer enc.Close()

	docs := make([][]byte, res.contexts)
	for i := range docs {
		d := s.corpus.newChat(uint64(3_000_000+i), fmt.Sprintf("c%06d", i), 4+i%21)
		docs[i] = mustJSON(&d)
		res.raw += int64(len(docs[i]))
		res.zstd += int64(len(enc.EncodeAll(docs[i], nil)))
	}
	chatDB := filepath.Join(s.dir, "size", "chat.db")
	rss, err := s.withSingleNode(ctx, "router-size-chat", chatDB, func(base string) error {
		if err := s.createTopic(ctx, base, "chat"); err != nil {
			return err
		}
		return s.putAll(ctx, base, "chat", len(docs), func(i int) string { return fmt.Sprintf("c%06d", i) }, func(i int) []byte { return docs[i] })
	})
	if err != nil {
		return nil, err
	}
	res.routerRSS = rss
	if err := s.measureDict(ctx, res, docs); err != nil {
		return nil, err
	}
	err = readBolt(chatDB, func(b *bolt.Bucket) error {
		st := b.Stats()
		res.pages = int64(st.BranchAlloc + st.LeafAlloc)
		return b.ForEach(func(k, v []byte) error {
			if bytes.HasPrefix(k, []byte("chat\x00")) {
				res.record += int64(len(k) + len(v))
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}

	embDB := filepath.Join(s.dir, "size", "emb.db")
	id := func(i int) string { return fmt.Sprintf("e%06d", i) }
	with := func(i int) []byte { return s.corpus.withEmbedding(uint64(i), id(i), embeddingDims, true) }
	without := func(i int) []byte { return s.corpus.withEmbedding(uint64(i), id(i), embeddingDims, false) }
	for i := range res.embDocs {
		res.rawWith += int64(len(with(i)))
		res.rawWithout += int64(len(without(i)))
	}
	rss, err = s.withSingleNode(ctx, "router-size-emb", embDB, func(base string) error {
		for _, t := range []string{"emb", "noemb"} {
			if err := s.createTopic(ctx, base, t); err != nil {
				return err
			}
		}
		if err := s.putAll(ctx, base, "emb", res.embDocs, id, with); err != nil {
			return err
		}
		return s.putAll(ctx, base, "noemb", res.embDocs, id, without)
	})
	if err != nil {
		return nil, err
	}
	res.routerRSS = max(res.routerRSS, rss)
	err = readBolt(embDB, func(b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			switch {
			case bytes.HasPrefix(k, []byte("emb\x00")):
				res.embWith += int64(len(v))
			case bytes.HasPrefix(k, []byte("noemb\x00")):
				res.embWithout += int64(len(v))
			}
			return nil
		})
	})
	return res, err
}

// trainMinSamples is the router's minimum of stored bodies to train on.
const trainMinSamples = 50

// measureDict stores a training corpus (as many conversations as the
// measured one, made with other seeds, so nothing measured was trained
// on) through a fresh single-node router, trains a dictionary, then stores
// the measured documents and reads their records back.
func (s *suite) measureDict(ctx context.Context, res *sizeResult, docs [][]byte) error {
	d := &res.dict
	d.trainDocs = len(docs)
	if d.trainDocs < trainMinSamples {
		d.skipped = fmt.Sprintf("a training corpus of %d conversations is below the router's minimum of %d", d.trainDocs, trainMinSamples)
		s.logf("row 10: dictionary skipped: %s", d.skipped)
		return nil
	}
	train := make([][]byte, d.trainDocs)
	for i := range train {
		doc := s.corpus.newChat(uint64(7_000_000+i), fmt.Sprintf("t%06d", i), 4+i%21)
		train[i] = mustJSON(&doc)
	}
	db := filepath.Join(s.dir, "size", "chat-dict.db")
	rss, err := s.withSingleNode(ctx, "router-size-dict", db, func(base string) error {
		for _, t := range []string{"train", "chat"} {
			if err := s.createTopic(ctx, base, t); err != nil {
				return err
			}
		}
		if err := s.putAll(ctx, base, "train", len(train), func(i int) string { return fmt.Sprintf("t%06d", i) }, func(i int) []byte { return train[i] }); err != nil {
			return err
		}
		var answer struct {
			ID              uint32  `json:"id"`
			DictionaryBytes int     `json:"dictionary_bytes"`
			RatioBefore     float64 `json:"ratio_before"`
			RatioAfter      float64 `json:"ratio_after"`
		}
		start := time.Now()
		if err := s.callJSON(ctx, http.MethodPost, base+"/api/v1/admin/compression/train", &answer); err != nil {
			var se *statusError
			if errors.As(err, &se) && se.status == http.StatusPreconditionFailed {
				// The router found nothing worth a dictionary: a result, not a failure.
				d.skipped = "the router refused to train: " + se.msg
				s.logf("row 10: dictionary skipped: %s", d.skipped)
				return nil
			}
			return fmt.Errorf("train a dictionary: %w", err)
		}
		d.id, d.dictBytes, d.ratioBefore, d.ratioAfter = answer.ID, answer.DictionaryBytes, answer.RatioBefore, answer.RatioAfter
		s.logf("row 10: dictionary %d of %d bytes trained on %d conversations in %s (held-out bodies %.3f → %.3f)",
			d.id, d.dictBytes, len(train), time.Since(start).Round(time.Millisecond), d.ratioBefore, d.ratioAfter)
		return s.putAll(ctx, base, "chat", len(docs), func(i int) string { return fmt.Sprintf("c%06d", i) }, func(i int) []byte { return docs[i] })
	})
	if err != nil {
		return err
	}
	res.routerRSS = max(res.routerRSS, rss)
	if d.skipped != "" {
		return nil
	}
	return readBolt(db, func(b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			if bytes.HasPrefix(k, []byte("chat\x00")) {
				d.record += int64(len(k) + len(v))
			}
			return nil
		})
	})
}

// statusError is an answer other than 200.
type statusError struct {
	status           int
	method, msg, url string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.method, e.url, e.status, e.msg)
}

// withSingleNode runs fn against a router in single-node mode on a fresh
// file, then stops it (SIGTERM: it closes the file) and returns its peak
// RSS.
func (s *suite) withSingleNode(ctx context.Context, name, db string, fn func(base string) error) (int64, error) {
	addr, err := freeAddr()
	if err != nil {
		return 0, err
	}
	p, err := s.start(name, addr, s.routerBin, "-http-addr="+addr, "-db-location="+db, "-cache-size=0")
	if err != nil {
		return 0, err
	}
	defer p.stop()
	if err := p.waitHTTP(ctx, "http://"+addr+"/healthz", 15*time.Second); err != nil {
		return 0, err
	}
	if err := fn("http://" + addr); err != nil {
		return 0, err
	}
	rss := peakRSS(p.pid())
	// A keep-alive connection the client dialled but never used is a new
	// connection to the server, and net/http's Shutdown waits 5 s for one
	// before it counts as idle: close ours, so the router stops at once.
	s.hc.CloseIdleConnections()
	p.stop()
	if p.err != nil {
		return 0, fmt.Errorf("%s did not stop cleanly: %v", name, p.err)
	}
	return rss, nil
}

// readBolt opens a stopped router's file read-only and passes its contexts
// bucket to fn.
func readBolt(path string, fn func(*bolt.Bucket) error) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("contexts"))
		if b == nil {
			return fmt.Errorf("%s: no contexts bucket", path)
		}
		return fn(b)
	})
}
