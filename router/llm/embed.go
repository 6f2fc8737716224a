package llm

import (
	"context"
	"errors"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"golang.org/x/sync/errgroup"
)

// encodeVector renders a context's embeddings for the vectors bucket, with
// what search filters by.
func encodeVector(d *schema.Document) []byte {
	return storage.EncodeVector(storage.Vector{Model: d.Metadata.EmbeddingModel, Tags: d.Metadata.Tags, Values: d.Content.Embeddings})
}

// embedRetryLoop embeds the contexts stored pending (Ollama was down or
// slow when they were written). Each pass reads the pending marks of every
// shard and embeds those contexts one by one; a pass that finds Ollama
// failing stops, and the delay to the next pass doubles (RetryInterval up
// to RetryMax); a pass that succeeds resets it. Several routers may run
// the loop at once: a context is written back only if it did not change
// meanwhile (compare-and-set on its version), so they cannot clobber
// each other or a client.
func (l *Service) embedRetryLoop(ctx context.Context) {
	delay := l.cfg.RetryInterval
	timer := time.NewTimer(0) // a first pass at start: marks left by a previous run
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if err := l.embedPendingPass(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			l.log.Warn("embedding retry pass stopped", "next_in", delay, "err", err)
			timer.Reset(delay)
			delay = min(2*delay, l.cfg.RetryMax)
			continue
		}
		delay = l.cfg.RetryInterval
		timer.Reset(delay)
	}
}

// embedPendingPass embeds every context marked pending. It returns the
// first error that means "try later" (Ollama or a shard unavailable).
func (l *Service) embedPendingPass(ctx context.Context) error {
	marks, err := l.pendingMarks(ctx)
	if err != nil {
		return err
	}
	l.m.EmbedBacklog.Set(float64(len(marks)))
	left := len(marks)
	for _, mark := range marks {
		if err := l.embedPending(ctx, mark); err != nil {
			return err
		}
		left--
		l.m.EmbedBacklog.Set(float64(left))
	}
	return nil
}

// pendingMarks reads the live pending marks of every shard, newest version
// of each key (a key held by several replicas appears once).
func (l *Service) pendingMarks(ctx context.Context) ([]storage.Record, error) {
	nodes := l.topo().ReadNodes()
	pages := make([][]storage.Record, len(nodes))
	g, gctx := errgroup.WithContext(ctx)
	for i, n := range nodes {
		g.Go(func() error {
			err := placement.Walk(gctx, n.Shard, schema.BucketEmbedPending, storage.ScanOptions{Limit: 1000}, l.shardTimeout, func(recs []storage.Record) error {
				pages[i] = append(pages[i], recs...)
				return nil
			})
			if err != nil {
				return apierr.FromStorage("scan pending embeddings on shard "+n.Name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	newest := map[string]storage.Record{}
	var order []string
	for _, p := range pages {
		for _, rec := range p {
			k := string(rec.Key)
			old, seen := newest[k]
			if !seen {
				order = append(order, k)
			}
			if !seen || rec.Version > old.Version {
				newest[k] = rec
			}
		}
	}
	out := make([]storage.Record, 0, len(order))
	for _, k := range order {
		out = append(out, newest[k])
	}
	return out, nil
}

// embedPending embeds one pending context and clears its mark. A context
// deleted, rewritten or already embedded meanwhile only loses its mark.
func (l *Service) embedPending(ctx context.Context, mark storage.Record) error {
	topic, id, ok := schema.SplitContextKey(mark.Key)
	if !ok {
		return l.clearMark(ctx, topic, id, mark)
	}
	pk := schema.Placement(topic, id)
	rec, err := l.coord.Get(ctx, pk, schema.BucketContexts, mark.Key)
	if errors.Is(err, storage.ErrNotFound) {
		return l.clearMark(ctx, topic, id, mark)
	}
	if err != nil {
		return err
	}
	if !codec.LiveRecord(rec, time.Now()) {
		return l.clearMark(ctx, topic, id, mark)
	}
	doc, err := l.codec.DecodeDocument(rec.Value)
	if err != nil {
		l.log.Error("pending context cannot be decoded; dropping its mark", "topic", topic, "id", id, "err", err)
		return l.clearMark(ctx, topic, id, mark)
	}
	if !doc.Metadata.EmbeddingPending {
		return l.clearMark(ctx, topic, id, mark)
	}
	if doc.Content.Conversation != nil {
		// Its messages are records: embed the recent ones, as an append does.
		p, err := l.docs.LastMessages(ctx, topic, id, embedWindowMessages)
		if err != nil {
			return err
		}
		if p.Version != rec.Version {
			return nil // appended meanwhile: that append embedded it or marked it again
		}
		doc.Content.Messages = p.Messages
	}
	l.embedForWrite(ctx, doc)
	if doc.Metadata.EmbeddingPending {
		return apierr.Errorf(apierr.CodeUnavailable, "%s still cannot embed", l.server())
	}
	replaced, err := l.docs.Replace(ctx, topic, doc, rec.Version)
	if err != nil || !replaced {
		return err // !replaced: rewritten meanwhile, and that write embedded it or marked it again
	}
	return l.clearMark(ctx, topic, id, mark)
}

// clearMark deletes a pending mark just above its own version, so a newer
// mark (a later write that could not be embedded either) survives.
func (l *Service) clearMark(ctx context.Context, topic, id string, mark storage.Record) error {
	return l.coord.WriteAt(ctx, schema.Placement(topic, id), schema.BucketEmbedPending, mark.Key, mark.Version+1, true, nil)
}
