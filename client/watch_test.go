package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/client"
)

// watchEvents runs Watch in the background and hands its events over;
// the channel closes when the iteration ends.
func watchEvents(t *testing.T, c *client.Client, topic, since string) (<-chan client.Event, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	out := make(chan client.Event, 100)
	go func() {
		defer close(out)
		for ev, err := range c.Watch(ctx, topic, since) {
			if err != nil {
				t.Errorf("Watch(%q, %q): %v", topic, since, err)
				return
			}
			out <- ev
		}
	}()
	return out, cancel
}

func nextEvent(t *testing.T, ch <-chan client.Event) client.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("Watch ended")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no Watch event within 10s")
	}
	return client.Event{}
}

// TestWatch follows a topic with the client's Watch: puts and deletes in
// order with their etags, then a resume from an event's token repeats
// nothing; a token the router never gave is ErrInvalidArgument.
func TestWatch(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	t.Cleanup(func() { c.DeleteTopic(context.Background(), "watched") })
	if _, err := c.CreateTopic(ctx, client.Topic{Name: "watched"}); err != nil {
		t.Fatal(err)
	}
	events, cancel := watchEvents(t, c, "watched", "")
	// The feed starts at the heads once connected: write until it shows.
	var first client.Event
	for i := range 100 {
		if _, err := c.PutContext(ctx, "watched", fmt.Sprintf("warm-%d", i), client.Document{}, nil); err != nil {
			t.Fatal(err)
		}
		select {
		case first = <-events:
		case <-time.After(50 * time.Millisecond):
			continue
		}
		break
	}
	if first.Kind != client.EventPut || first.Token == "" || first.UpdatedAt.IsZero() {
		t.Fatalf("first Watch event = %+v, want a put with a token and a time", first)
	}
	for drained := false; !drained; { // the rest of the warm-up writes
		select {
		case <-events:
		case <-time.After(300 * time.Millisecond):
			drained = true
		}
	}
	doc, err := c.PutContext(ctx, "watched", "c1", client.Document{Content: client.Content{Text: "hello"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteContext(ctx, "watched", "c1", nil); err != nil {
		t.Fatal(err)
	}
	put, del := nextEvent(t, events), nextEvent(t, events)
	if put.Kind != client.EventPut || put.ID != "c1" || put.ETag != doc.ETag {
		t.Errorf("event = %+v, want put c1 %s", put, doc.ETag)
	}
	if del.Kind != client.EventDelete || del.ID != "c1" || del.ETag == "" || del.ETag == doc.ETag {
		t.Errorf("event = %+v, want delete c1 with a newer etag", del)
	}
	cancel()

	if _, err := c.PutContext(ctx, "watched", "c2", client.Document{}, nil); err != nil {
		t.Fatal(err)
	}
	resumed, _ := watchEvents(t, c, "watched", del.Token)
	if ev := nextEvent(t, resumed); ev.ID != "c2" || ev.Kind != client.EventPut {
		t.Errorf("first event resumed from the delete's token = %+v, want put c2", ev)
	}

	for _, err := range c.Watch(ctx, "watched", "not-a-token") {
		if !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("Watch from a bad token: err = %v, want ErrInvalidArgument", err)
		}
		break
	}
}
