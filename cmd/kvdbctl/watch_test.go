package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/client"
	"github.com/go-kvdb/go-kvdb/router"
)

// TestWatch: kvdbctl watch resumes from a token and prints the changes
// after it, as JSON lines with -o json and as a line each by default.
func TestWatch(t *testing.T) {
	tc := newCluster(t, 2, 1, router.LLMConfig{})
	u := tc.URL
	mustCtl(t, u, "", "topics", "create", "docs")
	c, err := client.New(u)
	if err != nil {
		t.Fatal(err)
	}
	// A token to resume from: the feed's first event after it connected.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tokens := make(chan string, 200)
	go func() {
		for ev, err := range c.Watch(ctx, "docs", "") {
			if err != nil {
				return
			}
			tokens <- ev.Token
		}
	}()
	var token string
	for i := 0; token == "" && i < 100; i++ {
		mustCtl(t, u, `{}`, "contexts", "put", "docs", fmt.Sprintf("warm-%d", i))
		select {
		case token = <-tokens:
		case <-time.After(50 * time.Millisecond):
		}
	}
	if token == "" {
		t.Fatal("no feed event while writing")
	}
	for quiet := false; !quiet; { // the last warm-up write's token
		select {
		case token = <-tokens:
		case <-time.After(300 * time.Millisecond):
			quiet = true
		}
	}
	mustCtl(t, u, `{"content":{"text":"a"}}`, "contexts", "put", "docs", "w1")
	mustCtl(t, u, "", "contexts", "delete", "docs", "w1")

	out := mustCtl(t, u, "", "-o", "json", "watch", "docs", "-since", token, "-n", "2")
	var got []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var ev client.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("watch -o json line %q: %v", sc.Text(), err)
		}
		if ev.Token == "" || ev.ETag == "" || ev.UpdatedAt.IsZero() {
			t.Errorf("watch -o json event %+v: want a token, an etag and a time", ev)
		}
		got = append(got, ev.Kind+" "+ev.ID)
	}
	if want := "put w1,delete w1"; strings.Join(got, ",") != want {
		t.Errorf("watch -o json -since TOKEN printed %v, want %s", got, want)
	}
	if out := mustCtl(t, u, "", "watch", "docs", "-since", token, "-n", "1"); !strings.HasPrefix(out, "PUT") || !strings.Contains(out, "w1") {
		t.Errorf("watch printed %q, want a PUT line for w1", out)
	}
	if r := ctl(t, u, "", "watch", "docs", "-since", "!!"); r.code != 1 || !strings.Contains(r.stderr, "token") {
		t.Errorf("watch -since !! = exit %d, stderr %q; want 1 naming the token", r.code, r.stderr)
	}
	if r := ctl(t, u, "", "watch"); r.code != 2 {
		t.Errorf("watch without a topic = exit %d, want 2", r.code)
	}
}
