package storage

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Requests on the router-to-shard hop are batched the way the shard batches
// commits. A Get (or an Apply) goes out at once while fewer than
// Client.InFlight requests of its kind are on the wire to the shard, so a
// lone caller is never delayed; calls that arrive while every slot is busy
// queue up and leave together, as one MultiGet (or one Apply carrying all
// their writes), as soon as a slot comes back. Under load one HTTP exchange
// then carries many calls: the exchange is most of what a cache miss costs
// the router and the daemon (BENCHMARKS.md, finding 2), and a shard commits
// the writes of one Apply in one transaction and one fsync.

// DefaultInFlight is the Client.InFlight of a new client.
const DefaultInFlight = 2

// maxBatchWait bounds a batch whose callers set no deadline.
const maxBatchWait = 30 * time.Second

// pending is one queued call; done receives its outcome exactly once.
type pending[Req, Res any] struct {
	ctx    context.Context
	bucket string
	group  string // calls of one group (bucket, epoch) can share a request
	req    Req
	size   int // keys or writes the call adds to a batch
	done   chan outcome[Res]
}

type outcome[Res any] struct {
	res Res
	err error
}

// batcher queues the calls of one kind that find every request slot busy.
type batcher[Req, Res any] struct {
	mu       sync.Mutex
	inflight int
	queue    []*pending[Req, Res]
}

// call runs req through b: at once in a free slot with one, else queued for
// the next batch of its group, sent with many. Errors name the shard.
func call[Req, Res any](ctx context.Context, c *Client, b *batcher[Req, Res], bucket, group string, req Req, size int,
	one func(context.Context, Req) (Res, error), many func(context.Context, []*pending[Req, Res])) (Res, error) {
	b.mu.Lock()
	if c.InFlight <= 0 || b.inflight < c.InFlight {
		b.inflight++
		b.mu.Unlock()
		res, err := one(ctx, req)
		release(b, many)
		return res, err
	}
	p := &pending[Req, Res]{ctx: ctx, bucket: bucket, group: group, req: req, size: size, done: make(chan outcome[Res], 1)}
	b.queue = append(b.queue, p)
	b.mu.Unlock()
	select {
	case out := <-p.done:
		return out.res, out.err
	case <-ctx.Done():
		// The batch still goes out for the others (a write in it may
		// well apply: the caller can no longer know); its answer for
		// this caller lands in the buffered channel and is dropped.
		var zero Res
		return zero, fmt.Errorf("shard %s (%s): %v: %w", c.name, c.base, context.Cause(ctx), ErrUnavailable)
	}
}

// release frees a request slot, or hands it straight to the queued calls:
// those of the first one's group, in arrival order, up to MaxBatch.
func release[Req, Res any](b *batcher[Req, Res], many func(context.Context, []*pending[Req, Res])) {
	b.mu.Lock()
	if len(b.queue) == 0 {
		b.inflight--
		b.mu.Unlock()
		return
	}
	group := b.queue[0].group
	batch := make([]*pending[Req, Res], 0, len(b.queue))
	rest := b.queue[:0]
	n := 0
	for _, p := range b.queue {
		if p.group == group && (len(batch) == 0 || n+p.size <= MaxBatch) {
			batch = append(batch, p)
			n += p.size
		} else {
			rest = append(rest, p)
		}
	}
	clear(b.queue[len(rest):])
	b.queue = rest
	b.mu.Unlock()
	go func() {
		defer release(b, many)
		// Callers that gave up are not served; the batch lives as long
		// as the most patient remaining caller, and no single caller's
		// cancellation cuts it short for the others.
		live := batch[:0]
		var deadline time.Time
		for _, p := range batch {
			if p.ctx.Err() != nil {
				continue
			}
			live = append(live, p)
			d, ok := p.ctx.Deadline()
			if !ok {
				d = time.Now().Add(maxBatchWait)
			}
			if d.After(deadline) {
				deadline = d
			}
		}
		if len(live) == 0 {
			return
		}
		// Values (the epoch of a write) are the same for the whole group.
		ctx, cancel := context.WithDeadline(context.WithoutCancel(live[0].ctx), deadline)
		defer cancel()
		many(ctx, live)
	}()
}

// ObserveBatches makes the client report, for each Get or Apply request it
// sends, how many calls the request carries (op "get" or "apply"; 1 for a
// call sent on its own). It may be set while the client is in use (a
// client can be shared, and a later caller's observer replaces the first).
func (c *Client) ObserveBatches(fn func(op string, calls int)) { c.onBatch.Store(&fn) }

func (c *Client) observe(op string, calls int) {
	if fn := c.onBatch.Load(); fn != nil && *fn != nil {
		(*fn)(op, calls)
	}
}

// Get returns the record held for key, tombstones included, or ErrNotFound.
func (c *Client) Get(ctx context.Context, bucket string, key []byte) (Record, error) {
	if err := c.checkBucket(bucket); err != nil {
		return Record{}, err
	}
	// A key the shard would refuse must not ride in a batch, where it would
	// fail every other read with it.
	if err := checkKey(key); err != nil {
		return Record{}, fmt.Errorf("shard %s: %w", c.name, err)
	}
	return call(ctx, c, &c.gets, bucket, bucket, key, 1,
		func(ctx context.Context, key []byte) (Record, error) { return c.getOne(ctx, bucket, key) }, c.getMany)
}

// getOne reads one key in its own request.
func (c *Client) getOne(ctx context.Context, bucket string, key []byte) (Record, error) {
	c.observe("get", 1)
	body, err := c.do(ctx, http.MethodGet, pathGet+bucket+"?k="+queryEscape(key), nil)
	if err != nil {
		return Record{}, err
	}
	v, tomb, val, err := parseStored(body)
	if err != nil {
		return Record{}, fmt.Errorf("shard %s: %v: %w", c.name, err, ErrInternal)
	}
	rec := Record{Key: key, Version: v, Tombstone: tomb}
	if !tomb && len(val) > 0 {
		rec.Value = val
	}
	return rec, nil
}

// getMany reads a batch of queued Gets of one bucket with one MultiGet and
// answers each as getOne would have.
func (c *Client) getMany(ctx context.Context, batch []*pending[[]byte, Record]) {
	bucket := batch[0].bucket
	if len(batch) == 1 {
		rec, err := c.getOne(ctx, bucket, batch[0].req)
		batch[0].done <- outcome[Record]{rec, err}
		return
	}
	keys := make([][]byte, len(batch))
	for i, p := range batch {
		keys[i] = p.req
	}
	c.observe("get", len(batch))
	recs, err := c.MultiGet(ctx, bucket, keys)
	for i, p := range batch {
		switch {
		case err != nil:
			p.done <- outcome[Record]{err: err}
		case recs[i].Version == 0:
			p.done <- outcome[Record]{err: fmt.Errorf("shard %s: key %q: %w", c.name, p.req, ErrNotFound)}
		default:
			rec := recs[i]
			rec.Key = p.req
			if rec.Tombstone || len(rec.Value) == 0 {
				rec.Value = nil
			}
			p.done <- outcome[Record]{res: rec}
		}
	}
}

// Apply sends writes to the shard and returns their outcomes. Concurrent
// Applies to one bucket under one epoch may share a request: each write's
// outcome is its own either way, as in one commit on the shard.
func (c *Client) Apply(ctx context.Context, bucket string, writes []Write) ([]Result, error) {
	if err := c.checkBucket(bucket); err != nil {
		return nil, err
	}
	if len(writes) == 0 || len(writes) > MaxBatch {
		return nil, fmt.Errorf("shard %s: batch of %d writes (want 1..%d): %w", c.name, len(writes), MaxBatch, ErrInvalid)
	}
	for i := range writes {
		if err := checkWrite(&writes[i]); err != nil {
			return nil, fmt.Errorf("shard %s: %w", c.name, err)
		}
	}
	group := bucket
	if e, ok := EpochFrom(ctx); ok {
		group += "\x00" + strconv.FormatUint(e, 10)
	}
	return call(ctx, c, &c.applies, bucket, group, writes, len(writes),
		func(ctx context.Context, writes []Write) ([]Result, error) { return c.applyOne(ctx, bucket, writes) }, c.applyMany)
}

// applyOne sends the writes of one call in one request.
func (c *Client) applyOne(ctx context.Context, bucket string, writes []Write) ([]Result, error) {
	c.observe("apply", 1)
	return c.send(ctx, bucket, writes)
}

// send posts writes to the shard in one request.
func (c *Client) send(ctx context.Context, bucket string, writes []Write) ([]Result, error) {
	buf := getBuf()
	defer putBuf(buf)
	buf.Write(appendWrites(buf.AvailableBuffer(), writes))
	body, err := c.do(ctx, http.MethodPost, pathApply+bucket, buf.Bytes())
	if err != nil {
		return nil, err
	}
	res, err := parseResults(body, len(writes))
	if err != nil {
		return nil, fmt.Errorf("shard %s: %v: %w", c.name, err, ErrInternal)
	}
	return res, nil
}

// applyMany sends the writes of a batch of queued Applies in one request
// and gives each call the outcomes of its own writes.
func (c *Client) applyMany(ctx context.Context, batch []*pending[[]Write, []Result]) {
	bucket := batch[0].bucket
	if len(batch) == 1 {
		res, err := c.applyOne(ctx, bucket, batch[0].req)
		batch[0].done <- outcome[[]Result]{res, err}
		return
	}
	var all []Write
	for _, p := range batch {
		all = append(all, p.req...)
	}
	c.observe("apply", len(batch))
	res, err := c.send(ctx, bucket, all)
	for _, p := range batch {
		if err != nil {
			p.done <- outcome[[]Result]{err: err}
			continue
		}
		p.done <- outcome[[]Result]{res: res[:len(p.req):len(p.req)]}
		res = res[len(p.req):]
	}
}

// Txn sends a transaction (Store.Txn) to the shard in a request of its own:
// its writes apply all or none, so it never shares a request with others.
func (c *Client) Txn(ctx context.Context, writes []TxnWrite) ([]Result, error) {
	if err := checkTxn(writes); err != nil {
		return nil, fmt.Errorf("shard %s: %w", c.name, err)
	}
	buf := getBuf()
	defer putBuf(buf)
	buf.Write(appendTxn(buf.AvailableBuffer(), writes))
	body, err := c.do(ctx, http.MethodPost, pathTxn, buf.Bytes())
	if err != nil {
		return nil, err
	}
	res, err := parseResults(body, len(writes))
	if err != nil {
		return nil, fmt.Errorf("shard %s: %v: %w", c.name, err, ErrInternal)
	}
	return res, nil
}
