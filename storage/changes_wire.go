package storage

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// On the wire, GET /v1/changes?since=N&id=ID&heartbeat=MS answers with a
// stream of frames, each flushed as it is written, for as long as the
// follower stays:
//
//	frame  = kind (1) | len body (4) | body
//	hello  ('h', first) = uvarint(len id) id | uvarint(heartbeat ms)
//	batch  ('b')        = head (8) | change*
//	change = seq (8) | time (8, Unix ns) | version (8) | flags (1) |
//	         uvarint(len bucket) bucket | uvarint(len key) key
//	gap    ('g', last)  = the JSON body of a 410 answer (below)
//	error  ('e', last)  = a JSON error body, as any other route's
//
// It is binary like the rest of the protocol: keys are bytes (JSON would
// base64 them), a busy shard sends thousands of changes a second to every
// router, and both ends live here. A gap known before the stream starts
// is a 410 answer whose JSON body names what the shard holds:
//
//	{"error":{"code":"changes_gap","message":…,"since":N,"log_id":…,
//	          "log":{"id","oldest","head"},"unknown_log":bool,"beyond":bool}}
//
// GET /v1/changes/head answers the ChangeLog as JSON.
const (
	pathChanges     = "/v1/changes"
	pathChangesHead = "/v1/changes/head"

	changesContentType = "application/x-kvdb-changes"

	frameHello = 'h'
	frameBatch = 'b'
	frameGap   = 'g'
	frameError = 'e'

	// maxChangeFrame bounds a frame's body: a batch of maxChangeBatch
	// changes of the longest bucket name and key is about 4.2 MB.
	maxChangeFrame = 8 << 20
	// changesWriteTimeout bounds one frame's write: a follower that stops
	// reading (gone without a word) does not hold its stream forever.
	changesWriteTimeout = 30 * time.Second
)

// gapBody is the JSON of a ChangesGapError, in a 410 answer or a gap frame.
type gapBody struct {
	Error struct {
		Code    string    `json:"code"`
		Message string    `json:"message"`
		Since   uint64    `json:"since"`
		LogID   string    `json:"log_id,omitempty"` // the log asked about
		Log     ChangeLog `json:"log"`              // the log the shard holds
		Unknown bool      `json:"unknown_log,omitempty"`
		Beyond  bool      `json:"beyond,omitempty"`
	} `json:"error"`
}

func newGapBody(gap *ChangesGapError) *gapBody {
	var body gapBody
	body.Error.Code, body.Error.Message = "changes_gap", gap.Error()
	body.Error.Since, body.Error.LogID, body.Error.Log = gap.Since, gap.LogID, gap.Log
	body.Error.Unknown, body.Error.Beyond = gap.Unknown, gap.Beyond
	return &body
}

// parseGapBody returns the gap a body describes, or nil.
func parseGapBody(b []byte) *ChangesGapError {
	var body gapBody
	if json.Unmarshal(b, &body) != nil || body.Error.Code != "changes_gap" || !changesIDPattern.MatchString(body.Error.Log.ID) {
		return nil
	}
	e := &body.Error
	return &ChangesGapError{Since: e.Since, LogID: e.LogID, Log: e.Log, Unknown: e.Unknown, Beyond: e.Beyond}
}

// beginFrame starts a frame of kind; endFrame, given what beginFrame
// returned, fills in its length.
func beginFrame(dst []byte, kind byte) ([]byte, int) {
	dst = append(dst, kind, 0, 0, 0, 0)
	return dst, len(dst)
}

func endFrame(dst []byte, body int) []byte {
	binary.BigEndian.PutUint32(dst[body-4:body], uint32(len(dst)-body))
	return dst
}

func appendHello(dst []byte, logID string, heartbeat time.Duration) []byte {
	dst, body := beginFrame(dst, frameHello)
	dst = binary.AppendUvarint(dst, uint64(len(logID)))
	dst = append(dst, logID...)
	dst = binary.AppendUvarint(dst, uint64(heartbeat/time.Millisecond))
	return endFrame(dst, body)
}

func appendBatch(dst []byte, batch *ChangeBatch) []byte {
	dst, body := beginFrame(dst, frameBatch)
	dst = binary.BigEndian.AppendUint64(dst, batch.Head)
	for i := range batch.Changes {
		ch := &batch.Changes[i]
		dst = binary.BigEndian.AppendUint64(dst, ch.Seq)
		dst = binary.BigEndian.AppendUint64(dst, uint64(ch.Time.UnixNano()))
		dst = binary.BigEndian.AppendUint64(dst, ch.Version)
		var flags byte
		if ch.Tombstone {
			flags |= flagTombstone
		}
		dst = append(dst, flags)
		dst = binary.AppendUvarint(dst, uint64(len(ch.Bucket)))
		dst = append(dst, ch.Bucket...)
		dst = binary.AppendUvarint(dst, uint64(len(ch.Key)))
		dst = append(dst, ch.Key...)
	}
	return endFrame(dst, body)
}

// appendJSONFrame frames a JSON error body (a gap or an error).
func appendJSONFrame(dst []byte, kind byte, v any) []byte {
	dst, body := beginFrame(dst, kind)
	out, _ := json.Marshal(v) // plain fields: it cannot fail
	dst = append(dst, out...)
	return endFrame(dst, body)
}

// parseBatch decodes a batch frame's body; keys alias b.
func parseBatch(b []byte, logID string) (ChangeBatch, error) {
	r := wireReader{b: b}
	batch := ChangeBatch{LogID: logID, Head: r.uint64("batch head")}
	var bucket string
	for len(r.b) > 0 && r.err == nil {
		if len(batch.Changes) == maxChangeBatch {
			return ChangeBatch{}, fmt.Errorf("more than %d changes in a batch: %w", maxChangeBatch, ErrInvalid)
		}
		var ch Change
		ch.Seq = r.uint64("change seq")
		ch.Time = time.Unix(0, int64(r.uint64("change time")))
		ch.Version = r.uint64("change version")
		ch.Tombstone = r.byte("change flags")&flagTombstone != 0
		if name := r.bytes("change bucket", 32); string(name) != bucket {
			bucket = string(name)
		}
		ch.Bucket = bucket
		ch.Key = r.bytes("change key", MaxKeySize)
		batch.Changes = append(batch.Changes, ch)
	}
	if r.err != nil {
		return ChangeBatch{}, r.err
	}
	for i := range batch.Changes {
		if ch := &batch.Changes[i]; ch.Seq == 0 || ch.Seq > batch.Head || (i > 0 && ch.Seq <= batch.Changes[i-1].Seq) {
			return ChangeBatch{}, fmt.Errorf("change %d out of order in a batch to head %d: %w", ch.Seq, batch.Head, ErrInvalid)
		}
	}
	return batch, nil
}

// changesQuery reads a ChangesRequest from the query; anything it cannot
// read is ErrInvalid.
func changesQuery(q url.Values) (ChangesRequest, error) {
	var req ChangesRequest
	if q.Has("since") {
		s := q.Get("since")
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return req, fmt.Errorf("since %q (want a sequence number): %w", s, ErrInvalid)
		}
		req.Since = n
	}
	req.LogID = q.Get("id")
	if q.Has("heartbeat") {
		s := q.Get("heartbeat")
		ms, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return req, fmt.Errorf("heartbeat %q (want milliseconds): %w", s, ErrInvalid)
		}
		req.Heartbeat = time.Duration(ms) * time.Millisecond
		if ms == 0 {
			return req, fmt.Errorf("heartbeat 0 (want %s..%s): %w", MinChangesHeartbeat, MaxChangesHeartbeat, ErrInvalid)
		}
	}
	return req, req.check()
}

func (h *handler) changesHead(w http.ResponseWriter, r *http.Request) {
	pos, err := h.store.ChangesHead(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(pos)
}

// changes serves a follower for as long as it stays (see Store.Changes).
func (h *handler) changes(w http.ResponseWriter, r *http.Request) {
	req, err := changesQuery(r.URL.Query())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	// The connection may serve other requests after the stream: it must
	// not keep the deadline of the stream's last write.
	defer rc.SetWriteDeadline(time.Time{})
	var frame []byte // one buffer for every frame of the stream
	started, broken := false, false
	send := func() error {
		// A transport that cannot take deadlines still streams.
		_ = rc.SetWriteDeadline(time.Now().Add(changesWriteTimeout))
		if _, err := w.Write(frame); err != nil {
			broken = true
			return err
		}
		if err := rc.Flush(); err != nil {
			broken = true
			return err
		}
		return nil
	}
	err = h.store.Changes(r.Context(), req, func(batch ChangeBatch) error {
		frame = frame[:0]
		if !started {
			started = true
			w.Header().Set("Content-Type", changesContentType)
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusOK)
			frame = appendHello(frame, batch.LogID, req.heartbeat())
		}
		frame = appendBatch(frame, &batch)
		return send()
	})
	var gap *ChangesGapError
	switch {
	case !started && errors.As(err, &gap):
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusGone)
		json.NewEncoder(w).Encode(newGapBody(gap))
	case !started:
		h.fail(w, r, err)
	case broken || r.Context().Err() != nil:
		// The follower left, or the daemon is stopping: nobody to tell.
	case errors.As(err, &gap):
		frame = appendJSONFrame(frame[:0], frameGap, newGapBody(gap))
		send()
	default:
		h.log.Error("change stream failed", "err", err)
		var body errorBody
		body.Error.Code, body.Error.Message = "internal", err.Error()
		if errors.Is(err, ErrClosed) {
			body.Error.Code = "unavailable"
		}
		frame = appendJSONFrame(frame[:0], frameError, &body)
		send()
	}
}

// ChangesHead asks the shard where its change log stands.
func (c *Client) ChangesHead(ctx context.Context) (ChangeLog, error) {
	body, err := c.do(ctx, http.MethodGet, pathChangesHead, nil)
	if err != nil {
		return ChangeLog{}, err
	}
	var pos ChangeLog
	if err := json.Unmarshal(body, &pos); err != nil {
		return ChangeLog{}, fmt.Errorf("shard %s: changes head answer: %v: %w", c.name, err, ErrInternal)
	}
	return pos, nil
}

// errSilent ends a stream from which nothing was heard for three
// heartbeats: the shard, or the path to it, is gone without a word.
var errSilent = errors.New("no heartbeat")

// Changes follows the shard's change log as Store.Changes does, over one
// long-lived request (which the Client's timeout, if any, does not bound).
// Besides the Store's errors it returns ErrUnavailable when the shard cannot
// be reached, the stream breaks, or nothing comes for three heartbeats.
func (c *Client) Changes(ctx context.Context, req ChangesRequest, fn func(ChangeBatch) error) error {
	if err := req.check(); err != nil {
		return fmt.Errorf("shard %s: %w", c.name, err)
	}
	q := url.Values{}
	q.Set("since", strconv.FormatUint(req.Since, 10))
	if req.LogID != "" {
		q.Set("id", req.LogID)
	}
	if req.Heartbeat != 0 {
		q.Set("heartbeat", strconv.FormatInt(max(req.Heartbeat.Milliseconds(), 1), 10))
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	hreq, err := http.NewRequestWithContext(sctx, http.MethodGet, c.base+pathChanges+"?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("shard %s: %v: %w", c.name, err, ErrInvalid)
	}
	resp, err := c.stream.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("shard %s (%s): change stream: %v: %w", c.name, c.base, err, ErrUnavailable)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if gap := parseGapBody(body); resp.StatusCode == http.StatusGone && gap != nil {
			return fmt.Errorf("shard %s: %w", c.name, gap)
		}
		return c.answerError(resp.StatusCode, body)
	}
	st := changeStream{br: bufio.NewReaderSize(resp.Body, 64<<10), silence: silence(req.heartbeat())}
	watchdog := time.AfterFunc(st.silence, func() { cancel(errSilent) })
	defer watchdog.Stop()
	// broken names what ended the stream: the caller, silence, or the wire.
	broken := func(err error) error {
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(context.Cause(sctx), errSilent):
			return fmt.Errorf("shard %s (%s): change stream: nothing heard for %s: %w", c.name, c.base, st.silence, ErrUnavailable)
		case errors.Is(err, ErrInvalid):
			return fmt.Errorf("shard %s: change stream: %v: %w", c.name, err, ErrInternal)
		}
		return fmt.Errorf("shard %s (%s): change stream: %v: %w", c.name, c.base, err, ErrUnavailable)
	}
	kind, body, err := st.next()
	if err == nil && kind != frameHello {
		err = fmt.Errorf("stream starts with frame %q, want a hello: %w", kind, ErrInvalid)
	}
	if err != nil {
		return broken(err)
	}
	logID, every, err := parseHello(body)
	if err != nil {
		return broken(err)
	}
	st.silence = silence(every)
	for {
		kind, body, err := st.next()
		if err != nil {
			return broken(err)
		}
		watchdog.Stop()
		switch kind {
		case frameBatch:
			batch, err := parseBatch(body, logID)
			if err != nil {
				return broken(err)
			}
			if err := fn(batch); err != nil {
				return err
			}
		case frameGap:
			if gap := parseGapBody(body); gap != nil {
				return fmt.Errorf("shard %s: %w", c.name, gap)
			}
			return broken(fmt.Errorf("malformed gap frame: %w", ErrInvalid))
		case frameError:
			// The shard failed, or is closing: a frame stands in for
			// the status the answer had already sent.
			status := http.StatusInternalServerError
			var eb errorBody
			if json.Unmarshal(body, &eb) == nil && eb.Error.Code == "unavailable" {
				status = http.StatusServiceUnavailable
			}
			return c.answerError(status, body)
		default:
			return broken(fmt.Errorf("unknown frame %q: %w", kind, ErrInvalid))
		}
		watchdog.Reset(st.silence)
	}
}

// silence is how long a stream with heartbeat every may stay quiet before
// the Client takes it for dead: three heartbeats, and at least a second more
// than one, so a loaded machine is not mistaken for a dead shard.
func silence(every time.Duration) time.Duration { return max(3*every, every+time.Second) }

// changeStream reads the frames of a change stream.
type changeStream struct {
	br      *bufio.Reader
	silence time.Duration // how long the stream may stay quiet
}

// next reads a frame. Its body is fresh: a batch may keep it.
func (s *changeStream) next() (byte, []byte, error) {
	var head [5]byte
	if _, err := io.ReadFull(s.br, head[:]); err != nil {
		return 0, nil, err
	}
	kind, n := head[0], binary.BigEndian.Uint32(head[1:])
	if n > maxChangeFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds %d: %w", n, maxChangeFrame, ErrInvalid)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(s.br, body); err != nil {
		return 0, nil, err
	}
	return kind, body, nil
}

func parseHello(b []byte) (string, time.Duration, error) {
	r := wireReader{b: b}
	id := string(r.bytes("hello log id", 64))
	ms, k := binary.Uvarint(r.b)
	if r.err != nil || k <= 0 || !changesIDPattern.MatchString(id) || ms == 0 || ms > uint64(MaxChangesHeartbeat/time.Millisecond) {
		return "", 0, fmt.Errorf("malformed hello: %w", ErrInvalid)
	}
	return id, time.Duration(ms) * time.Millisecond, nil
}
