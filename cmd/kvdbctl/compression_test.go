package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/client"
	"github.com/go-kvdb/go-kvdb/router"
)

// TestCompressionCommands trains a dictionary with kvdbctl, then takes the
// cluster through an archive into another of another shape: the restore
// carries the dictionary, so every context reads back.
func TestCompressionCommands(t *testing.T) {
	ctx := context.Background()
	src := newCluster(t, 3, 1, router.LLMConfig{})
	c, _ := client.New(src.URL)
	if _, err := c.CreateTopic(ctx, client.Topic{Name: "chat"}); err != nil {
		t.Fatal(err)
	}
	words := strings.Fields("please refund the second charge on my card the plan renews monthly and the invoice shows it twice thanks")
	put := func(from, n int) {
		for i := from; i < from+n; i++ {
			var msgs []client.Message
			for j := range 6 {
				var b strings.Builder
				for k := range 25 {
					b.WriteString(words[(i*13+j*7+k*k)%len(words)] + " ")
				}
				msgs = append(msgs, client.Message{Role: []string{"user", "assistant"}[j%2], Content: b.String()})
			}
			if _, err := c.PutContext(ctx, "chat", fmt.Sprintf("c%03d", i), client.Document{Content: client.Content{Messages: msgs}}, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(0, 20)
	if r := ctl(t, src.URL, "", "compression", "train"); r.code != 1 || !strings.Contains(r.stderr, "at least 50") {
		t.Errorf("compression train on 20 contexts = exit %d %q, want 1 asking for at least 50", r.code, r.stderr)
	}
	if r := ctl(t, src.URL, "", "compression"); r.code != 2 {
		t.Errorf("compression without a subcommand = exit %d, want 2", r.code)
	}
	if out := mustCtl(t, src.URL, "", "compression", "status"); !strings.Contains(out, "none") {
		t.Errorf("compression status before training printed %q", out)
	}
	put(20, 60)
	var res client.TrainResult
	out := mustCtl(t, src.URL, "", "-o", "json", "compression", "train", "-rewrite")
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.ID == 0 || res.Rewrite == nil || res.Rewrite.Rewritten != 80 {
		t.Fatalf("compression train -rewrite -o json printed %s (%v), want a dictionary and 80 contexts rewritten", out, err)
	}
	id := fmt.Sprint(res.ID)
	if out := mustCtl(t, src.URL, "", "compression", "status"); !strings.Contains(out, id) || !strings.Contains(out, "ratio") {
		t.Errorf("compression status printed %q, want dictionary %s", out, id)
	}
	if out := mustCtl(t, src.URL, "", "compression", "rewrite"); !strings.Contains(out, "0 re-encoded") {
		t.Errorf("compression rewrite printed %q, want nothing re-encoded", out)
	}
	put(100, 5) // written with the dictionary

	file := filepath.Join(t.TempDir(), "cluster.kvdb")
	mustCtl(t, src.URL, "", "backup", "-o", file)
	dst := newCluster(t, 2, 2, router.LLMConfig{})
	mustCtl(t, dst.URL, "", "restore", file)
	if out := mustCtl(t, dst.URL, "", "compression", "status"); !strings.Contains(out, id) {
		t.Errorf("compression status after the restore printed %q, want dictionary %s", out, id)
	}
	dc, _ := client.New(dst.URL)
	for _, i := range []int{0, 42, 79, 100, 104} {
		key := fmt.Sprintf("c%03d", i)
		want, err := c.GetContext(ctx, "chat", key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := dc.GetContext(ctx, "chat", key)
		if err != nil || got.ETag != want.ETag || fmt.Sprint(got.Content.Messages) != fmt.Sprint(want.Content.Messages) {
			t.Errorf("%s after the restore = %+v, %v; want %+v", key, got, err, want)
		}
	}
}
