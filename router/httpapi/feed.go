package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/feed"
	"github.com/go-kvdb/go-kvdb/router/hlc"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/labstack/echo/v4"
)

// DefaultFeedHeartbeat is how often an idle change feed sends a comment.
const DefaultFeedHeartbeat = 15 * time.Second

// feedData is an event's data line.
type feedData struct {
	ID        string `json:"id,omitempty"`
	ETag      string `json:"etag,omitempty"`
	UpdatedAt string `json:"updated_at,omitempty"`
	// FirstSeq and LastSeq are the seqs of the messages a put appended
	// to the context's conversation, when it appended some.
	FirstSeq uint64 `json:"first_seq,omitempty"`
	LastSeq  uint64 `json:"last_seq,omitempty"`
}

// topicChanges is GET /topics/{topic}/changes: the topic's change feed as
// Server-Sent Events, from Last-Event-ID or ?since= (else the heads).
func (a *API) topicChanges(c echo.Context) error {
	topic := c.Param("topic")
	since := c.Request().Header.Get("Last-Event-ID")
	if q := c.QueryParam("since"); q != "" {
		since = q
	}
	every := a.cfg.FeedHeartbeat
	if every <= 0 {
		every = DefaultFeedHeartbeat
	}
	resp := c.Response()
	ctx := c.Request().Context()
	events := make(chan feed.Event)
	errc := make(chan error, 1)
	startc := make(chan struct{})
	go func() {
		errc <- a.feed.Subscribe(ctx, topic, since, func() { close(startc) }, func(ev feed.Event) error {
			select {
			case events <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	select {
	case err := <-errc:
		return feedError(err)
	case <-startc:
	}
	h := resp.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	resp.WriteHeader(http.StatusOK)
	resp.Flush()
	a.m.FeedSubscribers.Inc()
	defer a.m.FeedSubscribers.Dec()

	tick := time.NewTicker(every)
	defer tick.Stop()
	buf := make([]byte, 0, 256)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.streamsDone:
			return nil
		case err := <-errc:
			if err != nil && ctx.Err() == nil {
				a.log.Warn("change feed ended", "topic", topic, "err", err)
			}
			return nil
		case <-tick.C:
			if _, err := resp.Write([]byte(": heartbeat\n\n")); err != nil {
				return nil
			}
			resp.Flush()
		case ev := <-events:
			buf = appendEvent(buf[:0], ev)
			if _, err := resp.Write(buf); err != nil {
				return nil
			}
			resp.Flush()
			if ev.Kind != "" {
				a.m.FeedEvents.WithLabelValues(ev.Kind).Inc()
			}
		}
	}
}

// appendEvent frames ev: a bare position is an id line alone, which moves
// a client's Last-Event-ID without an event.
func appendEvent(dst []byte, ev feed.Event) []byte {
	if ev.Kind != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, ev.Kind...)
		dst = append(dst, '\n')
	}
	dst = append(dst, "id: "...)
	dst = append(dst, ev.Token...)
	dst = append(dst, '\n')
	switch ev.Kind {
	case feed.Put, feed.Delete:
		data, _ := json.Marshal(feedData{ID: ev.ID, ETag: schema.ETag(ev.Version), UpdatedAt: hlc.Time(ev.Version).Format(time.RFC3339Nano), FirstSeq: ev.FirstSeq, LastSeq: ev.LastSeq})
		dst = append(dst, "data: "...)
		dst = append(dst, data...)
		dst = append(dst, '\n')
	case feed.Reset:
		dst = append(dst, `data: {"reason":"a shard's change log has a gap: changes may have been missed; list the topic again"}`...)
		dst = append(dst, '\n')
	}
	return append(dst, '\n')
}

// feedError maps a feed that could not start to the API's errors.
func feedError(err error) error {
	if gone, ok := errors.AsType[*feed.GoneError](err); ok {
		e := apierr.Errorf(apierr.CodeGone, "the resume point is older than the change log keeps: list the topic, then resume the feed with ?since=%s", gone.Heads)
		e.Err = err
		return e
	}
	switch {
	case errors.Is(err, feed.ErrBadToken):
		return apierr.Errorf(apierr.CodeInvalidArgument, "Last-Event-ID or ?since= is not a token this feed gave out")
	case errors.Is(err, feed.ErrUnavailable):
		return &apierr.Error{Code: apierr.CodeUnavailable, Message: "a shard's change log cannot be read; retry", Err: err}
	}
	return err
}
