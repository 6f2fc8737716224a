package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Kinds of a change feed Event.
const (
	EventPut    = "put"
	EventDelete = "delete"
	// EventReset: a shard's change log had a gap; changes may be missed,
	// list the topic again.
	EventReset = "reset"
)

// Event is one change of a topic's context, from Watch.
type Event struct {
	Kind      string    `json:"kind"`
	ID        string    `json:"id,omitempty"`   // the context
	ETag      string    `json:"etag,omitempty"` // its version after the change
	UpdatedAt time.Time `json:"updated_at"`
	// FirstSeq..LastSeq are the messages a put appended to the context's
	// conversation; 0 when it appended none.
	FirstSeq uint64 `json:"first_seq,omitempty"`
	LastSeq  uint64 `json:"last_seq,omitempty"`
	// Token resumes the feed after this event (Watch's since).
	Token string `json:"token"`
}

// Watch follows topic's change feed from since (an Event's Token; ""
// starts with the changes made from now on). It reconnects by itself
// from where it was when the stream breaks or the router is unreachable,
// until ctx ends (the iteration then stops without an error). An answer
// of the router ends the iteration with its error: ErrGone when since is
// older than the shards keep, ErrPermissionDenied, ErrInvalidArgument.
func (c *Client) Watch(ctx context.Context, topic, since string) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		backoff := 100 * time.Millisecond
		for ctx.Err() == nil {
			q := url.Values{}
			if since != "" {
				q.Set("since", since)
			}
			resp, err := c.send(ctx, request{method: http.MethodGet, path: pathOf("topics", topic, "changes"), query: q,
				header: http.Header{"Accept": {"text/event-stream"}}})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if apiErr, ok := errors.AsType[*Error](err); ok && !errors.Is(apiErr, ErrUnavailable) && !errors.Is(apiErr, ErrRateLimited) {
					yield(Event{}, err)
					return
				}
			} else {
				var stop bool
				since, stop = readFeed(resp, since, yield)
				resp.Body.Close()
				if stop {
					return
				}
				backoff = 100 * time.Millisecond
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// readFeed yields the events of one stream and returns the last token it
// read, and whether the caller stopped.
func readFeed(resp *http.Response, since string, yield func(Event, error) bool) (string, bool) {
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 4<<10), 1<<20)
	var kind, id, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if id != "" {
				since = id
			}
			if kind != "" {
				ev := Event{Kind: kind, Token: since}
				if kind != EventReset && data != "" {
					var d struct {
						ID        string    `json:"id"`
						ETag      string    `json:"etag"`
						UpdatedAt time.Time `json:"updated_at"`
						FirstSeq  uint64    `json:"first_seq"`
						LastSeq   uint64    `json:"last_seq"`
					}
					if err := json.Unmarshal([]byte(data), &d); err != nil {
						yield(Event{}, fmt.Errorf("kvdb change feed: event %q: %w", data, err))
						return since, true
					}
					ev.ID, ev.ETag, ev.UpdatedAt, ev.FirstSeq, ev.LastSeq = d.ID, d.ETag, d.UpdatedAt, d.FirstSeq, d.LastSeq
				}
				if !yield(ev, nil) {
					return since, true
				}
			}
			kind, id, data = "", "", ""
		case strings.HasPrefix(line, ":"):
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				kind = value
			case "id":
				id = value
			case "data":
				data = value
			}
		}
	}
	return since, false
}
