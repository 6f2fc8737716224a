package storage

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// errStop ends a follow once a test has seen enough.
var errStop = errors.New("seen enough")

// follow runs sh.Changes from req and hands every batch to stop until stop
// says enough. It returns the changes seen, in the order delivered, and the
// last batch.
func follow(t testing.TB, sh shard, req ChangesRequest, stop func(seen []Change, b ChangeBatch) bool) ([]Change, ChangeBatch, error) {
	t.Helper()
	// A net under a test that would otherwise hang, not a measure; it is
	// shorter than MaxChangesHeartbeat, which TestChangesFollowLive needs.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var seen []Change
	var last ChangeBatch
	err := sh.Changes(ctx, req, func(b ChangeBatch) error {
		seen = append(seen, b.Changes...)
		last = b
		if stop(seen, b) {
			return errStop
		}
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return seen, last, err
}

// caughtUp stops a follow at the first batch that reaches the head.
func caughtUp(_ []Change, b ChangeBatch) bool {
	return len(b.Changes) == 0 || b.Changes[len(b.Changes)-1].Seq == b.Head
}

// mustCatchUp follows from req until caught up and returns what it saw.
func mustCatchUp(t testing.TB, sh shard, req ChangesRequest) ([]Change, ChangeBatch) {
	t.Helper()
	seen, last, err := follow(t, sh, req, caughtUp)
	if err != nil {
		t.Fatalf("Changes(%+v) = %v, want nil", req, err)
	}
	return seen, last
}

func mustHead(t testing.TB, sh shard) ChangeLog {
	t.Helper()
	pos, err := sh.ChangesHead(context.Background())
	if err != nil {
		t.Fatalf("ChangesHead() = %v, want nil", err)
	}
	return pos
}

// change is a Change without its time, for comparisons.
type change struct {
	seq     uint64
	bucket  string
	key     string
	version uint64
	tomb    bool
}

func (c change) String() string {
	return fmt.Sprintf("%d:%s/%q@%d%s", c.seq, c.bucket, c.key, c.version, map[bool]string{true: "†"}[c.tomb])
}

func changesOf(cs []Change) []change {
	out := make([]change, len(cs))
	for i, c := range cs {
		out[i] = change{c.Seq, c.Bucket, string(c.Key), c.Version, c.Tombstone}
	}
	return out
}

// wantGap checks that err is a *ChangesGapError describing log.
func wantGap(t testing.TB, what string, err error, since uint64, log ChangeLog) {
	t.Helper()
	var gap *ChangesGapError
	if !errors.Is(err, ErrChangesGap) || !errors.As(err, &gap) {
		t.Fatalf("%s = %v, want a *ChangesGapError", what, err)
	}
	if gap.Since != since || gap.Log != log {
		t.Errorf("%s = gap after %d in %+v, want after %d in %+v", what, gap.Since, gap.Log, since, log)
	}
}

// eachShardWith is eachShard with the store opened with opts.
func eachShardWith(t *testing.T, opts Options, fn func(t *testing.T, sh shard)) {
	t.Run("store", func(t *testing.T) {
		fn(t, openTestStoreAt(t, filepath.Join(t.TempDir(), "shard.db"), opts))
	})
	t.Run("wire", func(t *testing.T) {
		s := openTestStoreAt(t, filepath.Join(t.TempDir(), "shard.db"), opts)
		srv := httptest.NewServer(NewHandler(s, slog.New(slog.DiscardHandler)))
		t.Cleanup(srv.Close)
		c := NewClient("sh-test", srv.URL, nil)
		t.Cleanup(c.hc.CloseIdleConnections)
		fn(t, c)
	})
}

func TestChangesEveryKindOfWrite(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		ctx := context.Background()
		outcomes := func(what string, res []Result, want ...Outcome) {
			t.Helper()
			for i := range res {
				if res[i].Outcome != want[i] {
					t.Fatalf("%s: write %d = %s, want %s", what, i, res[i].Outcome, want[i])
				}
			}
		}
		outcomes("puts", mustApply(t, sh, "contexts", put("a", 1, "v1"), put("p/1", 1, "x"), put("p/2", 1, "y")), Applied, Applied, Applied)
		outcomes("stale put", mustApply(t, sh, "contexts", put("a", 1, "again")), Stale)
		outcomes("compare-and-set", mustApply(t, sh, "contexts", cond(put("a", 2, "v2"), CondVersion, 1)), Applied)
		outcomes("create over a record", mustApply(t, sh, "contexts", cond(put("a", 3, "v3"), CondAbsent, 0)), Conflict)
		outcomes("rewrite", mustApply(t, sh, "contexts", cond(put("a", 2, "resealed"), CondRewrite, 0)), Applied)
		outcomes("tombstone", mustApply(t, sh, "topics", del("t", 4)), Applied)
		if n, err := sh.DeletePrefix(ctx, "contexts", []byte("p/"), 5); err != nil || n != 2 {
			t.Fatalf("DeletePrefix(%q) = %d, %v, want 2", "p/", n, err)
		}
		// A purge removes a record nobody could read any more: followers
		// have nothing to learn from it.
		if n, err := sh.Purge(ctx, "topics", []Record{{Key: []byte("t"), Version: 4}}); err != nil || n != 1 {
			t.Fatalf("Purge(%q) = %d, %v, want 1", "t", n, err)
		}
		outcomes("dictionary", mustApply(t, sh, DictBucket, put("d1", 1, "dict")), Applied)

		seen, last := mustCatchUp(t, sh, ChangesRequest{})
		want := []change{
			{1, "contexts", "a", 1, false},
			{2, "contexts", "p/1", 1, false},
			{3, "contexts", "p/2", 1, false},
			{4, "contexts", "a", 2, false},
			{5, "contexts", "a", 2, false}, // the rewrite keeps its version
			{6, "topics", "t", 4, true},
			{7, "contexts", "p/1", 5, true},
			{8, "contexts", "p/2", 5, true},
			{9, DictBucket, "d1", 1, false},
		}
		if got := changesOf(seen); !slices.Equal(got, want) {
			t.Errorf("Changes(since 0) = %v, want %v", got, want)
		}
		for _, c := range seen {
			if c.Time.IsZero() || time.Since(c.Time) < 0 {
				t.Errorf("change %d at %v, want its commit time", c.Seq, c.Time)
			}
		}
		head := mustHead(t, sh)
		if !changesIDPattern.MatchString(head.ID) || head.Oldest != 1 || head.Head != 9 || last.Head != 9 || last.LogID != head.ID {
			t.Errorf("ChangesHead() = %+v after a batch with head %d of log %q, want 1..9 of that log", head, last.Head, last.LogID)
		}
		info, err := sh.Info(ctx)
		if err != nil {
			t.Fatalf("Info() = %v", err)
		}
		if info.Changes != head {
			t.Errorf("Info().Changes = %+v, want %+v", info.Changes, head)
		}
		for b := range info.Keys {
			if strings.HasPrefix(b, "_") {
				t.Errorf("Info().Keys lists the shard's own bucket %q", b)
			}
		}
	})
}

func TestChangesResume(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		for i := 1; i <= 10; i++ {
			mustApply(t, sh, "b", put(fmt.Sprintf("k%02d", i), uint64(i), "v"))
		}
		id := mustHead(t, sh).ID
		seen, _ := mustCatchUp(t, sh, ChangesRequest{Since: 4, LogID: id})
		var seqs []uint64
		for _, c := range seen {
			seqs = append(seqs, c.Seq)
			if want := fmt.Sprintf("k%02d", c.Seq); string(c.Key) != want {
				t.Errorf("change %d has key %q, want %q", c.Seq, c.Key, want)
			}
		}
		if want := []uint64{5, 6, 7, 8, 9, 10}; !slices.Equal(seqs, want) {
			t.Errorf("Changes(since 4) = seqs %v, want %v", seqs, want)
		}

		// Caught up: the first batch is at once, and empty.
		seen, last := mustCatchUp(t, sh, ChangesRequest{Since: 10, LogID: id})
		if len(seen) != 0 || last.Head != 10 || last.LogID != id {
			t.Errorf("Changes(since 10) = %v, head %d of %q, want nothing, head 10 of %q", changesOf(seen), last.Head, last.LogID, id)
		}

		pos := ChangeLog{ID: id, Oldest: 1, Head: 10}
		_, _, err := follow(t, sh, ChangesRequest{Since: 11, LogID: id}, caughtUp)
		wantGap(t, "Changes(since 11, beyond the head)", err, 11, pos)
		_, _, err = follow(t, sh, ChangesRequest{Since: 3, LogID: "0123456789abcdef"}, caughtUp)
		wantGap(t, "Changes(since 3 of another log)", err, 3, pos)
	})
}

// TestChangesFollowLive: a follower learns of each commit as it lands, not
// at its next heartbeat (here longer than the follow may last).
func TestChangesFollowLive(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		following := make(chan struct{})
		done := make(chan []Change, 1)
		go func() {
			first := true
			seen, _, err := follow(t, sh, ChangesRequest{Heartbeat: MaxChangesHeartbeat}, func(seen []Change, _ ChangeBatch) bool {
				if first {
					first = false
					close(following)
				}
				return len(seen) >= 3
			})
			if err != nil {
				t.Errorf("Changes() = %v, want nil", err)
			}
			done <- seen
		}()
		<-following
		for i := 1; i <= 3; i++ {
			mustApply(t, sh, "b", put(fmt.Sprintf("k%d", i), 1, "v"))
		}
		want := []change{{1, "b", "k1", 1, false}, {2, "b", "k2", 1, false}, {3, "b", "k3", 1, false}}
		if got := changesOf(<-done); !slices.Equal(got, want) {
			t.Errorf("Changes() while writing = %v, want %v", got, want)
		}
	})
}

func TestChangesRetention(t *testing.T) {
	eachShardWith(t, Options{ChangesRetain: 10}, func(t *testing.T, sh shard) {
		for i := 1; i <= 30; i++ {
			mustApply(t, sh, "b", put(fmt.Sprintf("k%02d", i), uint64(i), "v"))
		}
		head := mustHead(t, sh)
		if head.Oldest != 21 || head.Head != 30 {
			t.Fatalf("ChangesHead() = %+v after 30 writes keeping 10, want 21..30", head)
		}
		for _, since := range []uint64{0, 5, 19} {
			_, _, err := follow(t, sh, ChangesRequest{Since: since}, caughtUp)
			wantGap(t, fmt.Sprintf("Changes(since %d)", since), err, since, head)
		}
		seen, _ := mustCatchUp(t, sh, ChangesRequest{Since: 20, LogID: head.ID})
		if len(seen) != 10 || seen[0].Seq != 21 || seen[9].Seq != 30 {
			t.Errorf("Changes(since 20) = %v, want 21..30", changesOf(seen))
		}
	})
}

// TestChangesTrimBounded: a backlog of entries past the retention (here,
// the retention lowered) goes a bounded number per commit, not all at once
// in one commit that holds every writer.
func TestChangesTrimBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shard.db")
	s := openTestStoreAt(t, path, Options{})
	var ws []Write
	for i := range 1000 {
		ws = append(ws, put(fmt.Sprintf("k%04d", i), 1, "v"))
	}
	mustApply(t, s, "b", ws...)
	s.Close()

	s = openTestStoreAt(t, path, Options{ChangesRetain: 10})
	oldest := uint64(1)
	for i := 1; oldest < 1000-10+uint64(i); i++ {
		mustApply(t, s, "b", put("k0000", uint64(i+1), "v"))
		head := mustHead(t, s)
		// Each commit trims what it adds and trimSlack more, down to
		// the retention.
		want := min(oldest+1+trimSlack, head.Head-10+1)
		if head.Oldest != want {
			t.Fatalf("commit %d: ChangesHead() = %+v, want oldest %d", i, head, want)
		}
		oldest = head.Oldest
		if i > 10 {
			t.Fatalf("commit %d: the backlog is still %d..%d", i, head.Oldest, head.Head)
		}
	}
}

// TestChangesMaxAge: entries older than the age go with the next commit;
// the newest stays, so the head is known.
func TestChangesMaxAge(t *testing.T) {
	s := openTestStoreAt(t, filepath.Join(t.TempDir(), "shard.db"), Options{ChangesMaxAge: time.Nanosecond})
	for i := 1; i <= 5; i++ {
		mustApply(t, s, "b", put("k", uint64(i), "v"))
	}
	head := mustHead(t, s)
	if head.Oldest != 5 || head.Head != 5 {
		t.Fatalf("ChangesHead() = %+v with a max age of 1ns, want 5..5", head)
	}
	_, _, err := follow(t, s, ChangesRequest{Since: 3}, caughtUp)
	wantGap(t, "Changes(since 3)", err, 3, head)
	if seen, _ := mustCatchUp(t, s, ChangesRequest{Since: 4}); len(seen) != 1 || seen[0].Version != 5 {
		t.Errorf("Changes(since 4) = %v, want the write of version 5", changesOf(seen))
	}
}

// TestChangesGapWhileFollowing: a follower that falls behind the retention
// while it follows is told so, not handed what is left.
func TestChangesGapWhileFollowing(t *testing.T) {
	eachShardWith(t, Options{ChangesRetain: 5}, func(t *testing.T, sh shard) {
		mustApply(t, sh, "b", put("a", 1, "v"), put("b", 1, "v"), put("c", 1, "v"))
		started, release := make(chan struct{}), make(chan struct{})
		errc := make(chan error, 1)
		go func() {
			first := true
			_, _, err := follow(t, sh, ChangesRequest{Since: 3}, func(_ []Change, b ChangeBatch) bool {
				if first {
					first = false
					close(started)
					<-release
				}
				return false
			})
			errc <- err
		}()
		<-started
		var ws []Write
		for i := range 10 {
			ws = append(ws, put(fmt.Sprintf("n%d", i), 2, "v")) // one commit: 4..13, keeping 9..13
		}
		mustApply(t, sh, "b", ws...)
		close(release)
		wantGap(t, "Changes(since 3) after 10 more writes keeping 5", <-errc, 3, mustHead(t, sh))
	})
}

func TestChangesSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shard.db")
	opts := Options{ChangesRetain: 4}
	s := openTestStoreAt(t, path, opts)
	for i := 1; i <= 6; i++ {
		mustApply(t, s, "b", put(fmt.Sprintf("k%d", i), uint64(i), "v"))
	}
	before := mustHead(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}

	s = openTestStoreAt(t, path, opts)
	// A new generation of the same log: the ID changes, the seqs go on.
	if after := mustHead(t, s); after.Oldest != before.Oldest || after.Head != before.Head || after.ID == before.ID {
		t.Fatalf("ChangesHead() after reopen = %+v, want %d..%d under a new ID (before: %+v)", after, before.Oldest, before.Head, before)
	}
	mustApply(t, s, "b", put("k7", 7, "v"))
	// The handler on the reopened file serves the same log.
	srv := httptest.NewServer(NewHandler(s, nil))
	t.Cleanup(srv.Close)
	c := NewClient("sh-test", srv.URL, nil)
	for name, sh := range map[string]shard{"store": s, "wire": c} {
		seen, _ := mustCatchUp(t, sh, ChangesRequest{Since: before.Oldest, LogID: before.ID})
		want := []change{{4, "b", "k4", 4, false}, {5, "b", "k5", 5, false}, {6, "b", "k6", 6, false}, {7, "b", "k7", 7, false}}
		if got := changesOf(seen); !slices.Equal(got, want) {
			t.Errorf("%s: Changes(since %d) after reopen = %v, want %v", name, before.Oldest, got, want)
		}
	}
}

// TestChangesLogReset: a log that starts over has a new ID, and a follower of
// the old one is told of the gap.
func TestChangesLogReset(t *testing.T) {
	write := func(t *testing.T, s *Store, from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			mustApply(t, s, "b", put(fmt.Sprintf("k%d", i), uint64(i), "v"))
		}
	}

	t.Run("log lost", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "shard.db")
		s := openTestStoreAt(t, path, Options{})
		write(t, s, 1, 3)
		old := mustHead(t, s)
		s.Close()
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte(changesBucket)) }); err != nil {
			t.Fatalf("delete the change log: %v", err)
		}
		db.Close()

		s = openTestStoreAt(t, path, Options{})
		now := mustHead(t, s)
		if now.ID == old.ID || now.Head != 0 {
			t.Fatalf("ChangesHead() after the log was lost = %+v, want a new log (the old one was %+v)", now, old)
		}
		_, _, err = follow(t, s, ChangesRequest{Since: old.Head, LogID: old.ID}, caughtUp)
		wantGap(t, "Changes(since 3 of the lost log)", err, old.Head, now)
		write(t, s, 4, 4)
		if seen, _ := mustCatchUp(t, s, ChangesRequest{LogID: now.ID}); len(seen) != 1 || seen[0].Seq != 1 {
			t.Errorf("Changes(since 0 of the new log) = %v, want seq 1", changesOf(seen))
		}
	})

	t.Run("restored from a snapshot", func(t *testing.T) {
		s1 := openTestStore(t)
		write(t, s1, 1, 5)
		old := mustHead(t, s1)
		s2 := openTestStore(t)
		for _, br := range readSnapshot(t, s1) {
			mustApply(t, s2, br.bucket, Write{Record: br.rec})
		}
		now := mustHead(t, s2)
		if now.ID == old.ID || now.Head != 5 {
			t.Fatalf("ChangesHead() of the restored file = %+v, want a log of its own with the 5 restored writes (the original: %+v)", now, old)
		}
		_, _, err := follow(t, s2, ChangesRequest{Since: old.Head, LogID: old.ID}, caughtUp)
		wantGap(t, "Changes(of the original's log) on the restored file", err, old.Head, now)
	})

	// A copy of the file from earlier, opened again, holds the same log up
	// to where it was copied: a follower that saw no further continues, one
	// that saw further has a gap, before and after the copy writes on
	// under the numbers the follower saw.
	t.Run("file copied back", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "shard.db")
		s := openTestStoreAt(t, path, Options{})
		write(t, s, 1, 3)
		early := mustHead(t, s)
		s.Close()
		saved, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s = openTestStoreAt(t, path, Options{})
		write(t, s, 4, 6)
		later := mustHead(t, s)
		s.Close()
		if err := os.WriteFile(path, saved, 0o600); err != nil {
			t.Fatal(err)
		}
		s = openTestStoreAt(t, path, Options{})
		now := mustHead(t, s)
		if now.Head != 3 {
			t.Fatalf("ChangesHead() of the older copy = %+v, want head 3", now)
		}
		_, _, err = follow(t, s, ChangesRequest{Since: later.Head, LogID: later.ID}, caughtUp)
		wantGap(t, "Changes(since 6) of a file back at 3", err, later.Head, now)

		write(t, s, 7, 9) // seqs 4..6 again, other writes
		now = mustHead(t, s)
		for _, since := range []uint64{4, 6} {
			_, _, err = follow(t, s, ChangesRequest{Since: since, LogID: later.ID}, caughtUp)
			wantGap(t, fmt.Sprintf("Changes(since %d of the lost generation) of a copy written past it", since), err, since, now)
		}
		seen, _ := mustCatchUp(t, s, ChangesRequest{Since: early.Head, LogID: early.ID})
		want := []change{{4, "b", "k7", 7, false}, {5, "b", "k8", 8, false}, {6, "b", "k9", 9, false}}
		if got := changesOf(seen); !slices.Equal(got, want) {
			t.Errorf("Changes(since 3 of the generation the copy holds) = %v, want %v", got, want)
		}
	})

	t.Run("generations", func(t *testing.T) {
		// Followers of every generation of a file continue across its
		// restarts; one from past where its generation ended does not.
		path := filepath.Join(t.TempDir(), "shard.db")
		var heads []ChangeLog
		for i := range 3 {
			s := openTestStoreAt(t, path, Options{})
			write(t, s, 2*i+1, 2*i+2)
			heads = append(heads, mustHead(t, s))
			s.Close()
		}
		s := openTestStoreAt(t, path, Options{})
		now := mustHead(t, s)
		for _, h := range heads {
			if seen, _ := mustCatchUp(t, s, ChangesRequest{Since: h.Head, LogID: h.ID}); uint64(len(seen)) != now.Head-h.Head {
				t.Errorf("Changes(since %d of %s) = %v, want %d..%d", h.Head, h.ID, changesOf(seen), h.Head+1, now.Head)
			}
		}
		_, _, err := follow(t, s, ChangesRequest{Since: 3, LogID: heads[0].ID}, caughtUp)
		wantGap(t, "Changes(since 3 of the first generation, which ended at 2)", err, 3, now)
	})
}

// TestChangesConcurrentWriters: writers race over shared keys; a follower
// sees each applied write exactly once, in sequence order without holes,
// and the versions of each key rise with the sequence.
func TestChangesConcurrentWriters(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		const writers, each = 8, 60
		var want atomic.Int64
		want.Store(1 << 62)
		var seen []Change
		done := make(chan error, 1)
		go func() {
			var err error
			// Short heartbeats let the follower notice want once set.
			seen, _, err = follow(t, sh, ChangesRequest{Heartbeat: 20 * time.Millisecond}, func(seen []Change, _ ChangeBatch) bool {
				return int64(len(seen)) >= want.Load()
			})
			done <- err
		}()

		applied := make([][]change, writers)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for j := range each {
					bucket := fmt.Sprintf("b%d", j%2)
					wr := put(fmt.Sprintf("k%d", j%5), uint64(j*writers+w+1), "v")
					if j%7 == 3 {
						wr = del(string(wr.Key), wr.Version)
					}
					res, err := sh.Apply(context.Background(), bucket, []Write{wr})
					if err != nil {
						t.Errorf("Apply(%s) = %v", wr.Key, err)
						return
					}
					if res[0].Outcome == Applied {
						applied[w] = append(applied[w], change{0, bucket, string(wr.Key), wr.Version, wr.Tombstone})
					}
				}
			})
		}
		wg.Wait()
		var all []change
		for _, a := range applied {
			all = append(all, a...)
		}
		want.Store(int64(len(all)))
		if err := <-done; err != nil {
			t.Fatalf("Changes() = %v, want nil", err)
		}

		got := changesOf(seen)
		last := map[string]uint64{}
		for i, c := range got {
			if c.seq != uint64(i+1) {
				t.Fatalf("change %d of the follow has seq %d, want %d: %v", i, c.seq, i+1, got)
			}
			k := c.bucket + "/" + c.key
			if c.version <= last[k] {
				t.Errorf("change %v after version %d of the same key", c, last[k])
			}
			last[k] = c.version
			got[i].seq = 0
		}
		order := func(a, b change) int { return strings.Compare(a.String(), b.String()) }
		slices.SortFunc(got, order)
		slices.SortFunc(all, order)
		if !slices.Equal(got, all) {
			t.Errorf("the follower saw %d changes, want the %d applied writes exactly once:\ngot  %v\nwant %v", len(got), len(all), got, all)
		}
	})
}

// TestChangesSlowFollower: a follower that does not read holds no writer.
func TestChangesSlowFollower(t *testing.T) {
	t.Run("store", func(t *testing.T) {
		s := openTestStore(t)
		started, release := make(chan struct{}), make(chan struct{})
		done := make(chan []Change, 1)
		go func() {
			first := true
			seen, _, err := follow(t, s, ChangesRequest{}, func(seen []Change, b ChangeBatch) bool {
				if first {
					first = false
					close(started)
					<-release // the follower stalls while the writers write
				}
				return len(seen) >= 2000
			})
			if err != nil {
				t.Errorf("Changes() = %v, want nil", err)
			}
			done <- seen
		}()
		<-started
		writeMany(t, s, 4, 50, 8) // 2000 writes, while the follower stalls
		close(release)
		seen := <-done
		for i, c := range seen {
			if c.Seq != uint64(i+1) {
				t.Fatalf("change %d of the follow has seq %d, want %d", i, c.Seq, i+1)
			}
		}
		if len(seen) != 2000 {
			t.Errorf("the follower saw %d changes after it stalled, want 2000", len(seen))
		}
	})

	t.Run("wire", func(t *testing.T) {
		s, _, srv := openTestClient(t)
		// A follower that never reads its answer: the handler's writes
		// back up in the socket, while the writers go on.
		resp, err := http.Get(srv.URL + pathChanges + "?since=0")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		writeMany(t, s, 4, 20, 2000) // 8 MB of keys in the stream
		// Late, the follower reads it all, in order.
		st := changeStream{br: bufio.NewReader(resp.Body)}
		if kind, _, err := st.next(); err != nil || kind != frameHello {
			t.Fatalf("first frame = %q, %v, want a hello", kind, err)
		}
		var next uint64 = 1
		for next <= 4*20*10 {
			kind, body, err := st.next()
			if err != nil || kind != frameBatch {
				t.Fatalf("frame = %q, %v, want a batch", kind, err)
			}
			batch, err := parseBatch(body, "")
			if err != nil {
				t.Fatalf("parseBatch() = %v", err)
			}
			for _, c := range batch.Changes {
				if c.Seq != next {
					t.Fatalf("change %d, want %d", c.Seq, next)
				}
				next++
			}
		}
	})
}

// writeMany applies writers×applies batches of 10 writes with keys of
// keyLen bytes and waits for all of them.
func writeMany(t testing.TB, s *Store, writers, applies, keyLen int) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range applies {
				ws := make([]Write, 10)
				for j := range ws {
					key := fmt.Sprintf("w%d-%d-%d-", w, i, j)
					key += strings.Repeat("k", max(keyLen-len(key), 0))
					ws[j] = put(key, 1, "v")
				}
				if _, err := s.Apply(context.Background(), "b", ws); err != nil {
					t.Errorf("Apply() = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestChangesCancelled(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		ctx, cancel := context.WithCancel(context.Background())
		batches := 0
		err := sh.Changes(ctx, ChangesRequest{Heartbeat: 10 * time.Millisecond}, func(ChangeBatch) error {
			if batches++; batches == 2 {
				cancel()
			}
			return nil
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Changes() after cancel = %v, want context.Canceled", err)
		}
		if res := mustApply(t, sh, "b", put("k", 1, "v")); res[0].Outcome != Applied {
			t.Errorf("Apply() after a cancelled follower = %s, want applied", res[0].Outcome)
		}
	})
}

func TestChangesStoreClosed(t *testing.T) {
	for _, tc := range []struct {
		name string
		want error
		open func(t *testing.T) (*Store, shard)
	}{
		{"store", ErrClosed, func(t *testing.T) (*Store, shard) { s := openTestStore(t); return s, s }},
		{"wire", ErrUnavailable, func(t *testing.T) (*Store, shard) {
			s := openTestStore(t)
			srv := httptest.NewServer(NewHandler(s, slog.New(slog.DiscardHandler)))
			t.Cleanup(srv.Close)
			return s, NewClient("sh-test", srv.URL, nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, sh := tc.open(t)
			_, _, err := follow(t, sh, ChangesRequest{}, func(_ []Change, b ChangeBatch) bool {
				s.Close()
				return false
			})
			if !errors.Is(err, tc.want) {
				t.Errorf("Changes() while the store closes = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestChangesHeartbeats(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		mustApply(t, sh, "b", put("a", 1, "v"), put("b", 1, "v"))
		n := 0
		seen, last, err := follow(t, sh, ChangesRequest{Since: 2, Heartbeat: 10 * time.Millisecond}, func(seen []Change, b ChangeBatch) bool {
			if b.Head != 2 {
				t.Errorf("heartbeat with head %d, want 2", b.Head)
			}
			n++
			return n == 4
		})
		if err != nil || len(seen) != 0 || last.Head != 2 {
			t.Errorf("Changes(since 2) = %d changes, head %d, %v; want heartbeats at head 2", len(seen), last.Head, err)
		}
	})
}

// TestClientChangesBrokenShard: a daemon that breaks off or garbles the
// stream (a fake: a real one does neither) is reported, not waited for.
func TestClientChangesBrokenShard(t *testing.T) {
	hello := appendHello(nil, "0123456789abcdef", 10*time.Millisecond)
	tests := []struct {
		name   string
		stream []byte
		hang   bool // after the stream, keep the answer open
		want   error
		says   string
	}{
		{"silent after the hello", hello, true, ErrUnavailable, "nothing heard"},
		{"cut after the hello", hello, false, ErrUnavailable, "EOF"},
		{"no hello", appendBatch(nil, &ChangeBatch{Head: 1}), false, ErrInternal, "hello"},
		{"unknown frame", append(slices.Clone(hello), 'x', 0, 0, 0, 0), false, ErrInternal, "unknown frame"},
		{"oversized frame", append(slices.Clone(hello), frameBatch, 0xff, 0xff, 0xff, 0xff), false, ErrInternal, "exceeds"},
		{"truncated batch", append(slices.Clone(hello), frameBatch, 0, 0, 0, 3, 1, 2, 3), false, ErrInternal, "batch head"},
		{"seq beyond the head", append(slices.Clone(hello), appendBatch(nil, &ChangeBatch{Head: 1, Changes: []Change{{Seq: 2, Bucket: "b", Key: []byte("k"), Version: 1}}})...), false, ErrInternal, "out of order"},
		{"error frame", append(slices.Clone(hello), appendJSONFrame(nil, frameError, json.RawMessage(`{"error":{"code":"internal","message":"disk on fire"}}`))...), false, ErrInternal, "disk on fire"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", changesContentType)
				w.Write(tt.stream)
				w.(http.Flusher).Flush()
				if tt.hang {
					<-r.Context().Done()
				}
			}))
			t.Cleanup(srv.Close)
			c := NewClient("sh-fake", srv.URL, nil)
			err := c.Changes(context.Background(), ChangesRequest{}, func(ChangeBatch) error { return nil })
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.says) || !strings.Contains(err.Error(), "sh-fake") {
				t.Errorf("Changes() = %v, want %v naming the shard and saying %q", err, tt.want, tt.says)
			}
		})
	}
}

// TestClientChangesNoTimeout: a change stream outlives the timeout of the
// client the shard's other calls go through.
func TestClientChangesNoTimeout(t *testing.T) {
	s := openTestStore(t)
	srv := httptest.NewServer(NewHandler(s, nil))
	t.Cleanup(srv.Close)
	hc := &http.Client{Transport: NewTransport(), Timeout: 50 * time.Millisecond}
	c := NewClient("sh-test", srv.URL, hc)
	beats := 0
	_, _, err := follow(t, c, ChangesRequest{Heartbeat: 20 * time.Millisecond}, func([]Change, ChangeBatch) bool {
		beats++
		return beats == 10 // ten heartbeats take longer than the timeout
	})
	if err != nil {
		t.Errorf("Changes() through a client with a 50ms timeout = %v after %d batches, want nil", err, beats)
	}
}

func TestChangesToken(t *testing.T) {
	s := openTestStore(t)
	mustApply(t, s, "b", put("k", 1, "v"))
	srv := httptest.NewServer(RequireToken(NewHandler(s, nil), testToken))
	t.Cleanup(srv.Close)

	good := NewClient("sh-1", srv.URL, &http.Client{Transport: &TokenTransport{Base: NewTransport(), Token: testToken}})
	if seen, _ := mustCatchUp(t, good, ChangesRequest{}); len(seen) != 1 {
		t.Errorf("Changes() with the token = %v, want the one write", changesOf(seen))
	}
	if head := mustHead(t, good); head.Head != 1 {
		t.Errorf("ChangesHead() with the token = %+v, want head 1", head)
	}

	bad := NewClient("sh-1", srv.URL, &http.Client{Transport: &TokenTransport{Token: testToken + "x"}})
	if _, _, err := follow(t, bad, ChangesRequest{}, caughtUp); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("Changes() with a wrong token = %v, want ErrUnauthenticated", err)
	}
	if _, err := bad.ChangesHead(context.Background()); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("ChangesHead() with a wrong token = %v, want ErrUnauthenticated", err)
	}
	for _, path := range []string{pathChanges + "?since=0", pathChangesHead} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		checkErrorAnswer(t, resp, http.StatusUnauthorized, "unauthenticated")
	}
}

// TestChangesBadRequests: what no Client sends is refused with 400 before
// anything is streamed.
func TestChangesBadRequests(t *testing.T) {
	s, c, srv := openTestClient(t)
	mustApply(t, s, "b", put("k", 1, "v"))
	for _, q := range []string{
		"since=abc", "since=-1", "since=18446744073709551616", "since=", "since=1e3",
		"id=xyz", "id=0123456789ABCDEF", "id=0123456789abcdef00", "id=0123456789abcde",
		"heartbeat=0", "heartbeat=abc", "heartbeat=5", "heartbeat=60001", "heartbeat=-10", "heartbeat=",
	} {
		resp, err := http.Get(srv.URL + pathChanges + "?" + q)
		if err != nil {
			t.Fatal(err)
		}
		checkErrorAnswer(t, resp, http.StatusBadRequest, "invalid_argument")
	}
	for _, req := range []ChangesRequest{
		{LogID: "nope"},
		{Heartbeat: time.Nanosecond},
		{Heartbeat: 2 * MaxChangesHeartbeat},
		{Heartbeat: -time.Second},
	} {
		for name, sh := range map[string]shard{"store": s, "wire": c} {
			if _, _, err := follow(t, sh, req, caughtUp); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: Changes(%+v) = %v, want ErrInvalid", name, req, err)
			}
		}
	}
	if head := mustHead(t, s); head.Oldest != 1 || head.Head != 1 {
		t.Errorf("ChangesHead() after bad requests = %+v, want 1..1", head)
	}
}

// TestChangesGapAnswer: a gap known at the start is a 410 whose JSON body
// names what the shard keeps.
func TestChangesGapAnswer(t *testing.T) {
	s := openTestStoreAt(t, filepath.Join(t.TempDir(), "shard.db"), Options{ChangesRetain: 2})
	srv := httptest.NewServer(NewHandler(s, nil))
	t.Cleanup(srv.Close)
	for i := 1; i <= 5; i++ {
		mustApply(t, s, "b", put("k", uint64(i), "v"))
	}
	head := mustHead(t, s)
	resp, err := http.Get(srv.URL + pathChanges + "?since=1&id=" + head.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error struct {
			Code    string    `json:"code"`
			Message string    `json:"message"`
			Since   uint64    `json:"since"`
			Log     ChangeLog `json:"log"`
		} `json:"error"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	if err != nil || resp.StatusCode != http.StatusGone || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/changes?since=1 = %d %s (%v), want 410 with a JSON body", resp.StatusCode, resp.Header.Get("Content-Type"), err)
	}
	e := body.Error
	if e.Code != "changes_gap" || e.Since != 1 || e.Log != head || !strings.Contains(e.Message, "4..5") {
		t.Errorf("410 body = %+v, want code changes_gap, since 1, log %+v", e, head)
	}
}

func TestChangeBatchRoundTrip(t *testing.T) {
	batch := ChangeBatch{Head: 1 << 40, Changes: []Change{
		{Seq: 7, Time: time.Unix(0, 1700000000123456789), Bucket: "contexts", Key: []byte("a"), Version: 3},
		{Seq: 8, Time: time.Unix(0, 1), Bucket: "contexts", Key: allBytes(MaxKeySize), Version: ^uint64(0), Tombstone: true},
		{Seq: 1 << 40, Time: time.Unix(0, 0), Bucket: strings.Repeat("b", 32), Key: []byte{0}, Version: 1},
	}}
	frame := appendBatch(nil, &batch)
	st := changeStream{br: bufio.NewReader(strings.NewReader(string(frame)))}
	kind, body, err := st.next()
	if err != nil || kind != frameBatch {
		t.Fatalf("next() = %q, %v, want a batch frame", kind, err)
	}
	got, err := parseBatch(body, "id")
	if err != nil {
		t.Fatalf("parseBatch() = %v", err)
	}
	if got.Head != batch.Head || got.LogID != "id" || !slices.EqualFunc(got.Changes, batch.Changes, func(a, b Change) bool {
		return a.Time.Equal(b.Time) && changesOf([]Change{a})[0] == changesOf([]Change{b})[0]
	}) {
		t.Errorf("parseBatch(appendBatch(%v)) = %v", changesOf(batch.Changes), changesOf(got.Changes))
	}
	// Every cut of the body fails, or decodes to fewer whole changes.
	for n := range len(body) {
		if cut, err := parseBatch(body[:n], "id"); err == nil && (len(cut.Changes) >= len(batch.Changes) || n < 8) {
			t.Fatalf("parseBatch(first %d of %d bytes) = %d changes, want an error", n, len(body), len(cut.Changes))
		}
	}
}

// FuzzParseBatch: any body decodes or is ErrInvalid, and what decodes
// re-encodes to a body that decodes the same.
func FuzzParseBatch(f *testing.F) {
	frame := appendBatch(nil, &ChangeBatch{Head: 9, Changes: []Change{
		{Seq: 3, Time: time.Unix(0, 5), Bucket: "b", Key: []byte("k"), Version: 2, Tombstone: true},
		{Seq: 9, Time: time.Unix(0, 6), Bucket: "c", Key: []byte("kk"), Version: 3},
	}})
	f.Add(frame[5:])
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1})
	f.Add([]byte{1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		batch, err := parseBatch(b, "")
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("parseBatch(%x) = %v, want ErrInvalid", b, err)
			}
			return
		}
		again, err := parseBatch(appendBatch(nil, &batch)[5:], "")
		if err != nil || again.Head != batch.Head || !slices.Equal(changesOf(again.Changes), changesOf(batch.Changes)) {
			t.Fatalf("parseBatch(appendBatch(parseBatch(%x))) = %+v, %v", b, again, err)
		}
	})
}

// BenchmarkChangesFollow: one writer, one follower over the wire; each
// operation is a durable write and the moment the follower learns of it.
// lag-p50-µs and lag-p99-µs are how long after the writer's Apply returned
// the follower had the change (0 when it had it first): the shard's part
// of how soon another router hears of a write.
func BenchmarkChangesFollow(b *testing.B) {
	s, c, _ := openTestClient(b)
	ctx, cancel := context.WithCancel(context.Background())
	type sighting struct {
		seq uint64
		at  time.Time
	}
	seen := make(chan sighting, 1)
	done := make(chan error, 1)
	go func() {
		done <- c.Changes(ctx, ChangesRequest{}, func(batch ChangeBatch) error {
			if n := len(batch.Changes); n > 0 {
				seen <- sighting{batch.Changes[n-1].Seq, time.Now()}
			}
			return nil
		})
	}()
	writes := make([]Write, 1)
	var lags []time.Duration
	b.ReportAllocs()
	for i := 1; b.Loop(); i++ {
		writes[0] = put("key", uint64(i), "value")
		if _, err := s.Apply(ctx, "bench", writes); err != nil {
			b.Fatal(err)
		}
		acked := time.Now()
		got := <-seen
		if got.seq != uint64(i) {
			b.Fatalf("follower saw seq %d, want %d", got.seq, i)
		}
		lags = append(lags, max(got.at.Sub(acked), 0))
	}
	b.StopTimer()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		b.Errorf("Changes() = %v, want context.Canceled", err)
	}
	slices.Sort(lags)
	b.ReportMetric(float64(lags[len(lags)/2].Microseconds()), "lag-p50-µs")
	b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds()), "lag-p99-µs")
}

// TestChangesFollowAcrossReopen: a follower of the previous generation that
// resumes on the reopened file, and stays on the stream while new writes
// come, gets every one of them: the stream goes on in the new generation
// instead of checking each later read against the generation it resumed
// from (which ended before those seqs: a false gap).
func TestChangesFollowAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shard.db")
	s := openTestStoreAt(t, path, Options{})
	for i := 1; i <= 3; i++ {
		mustApply(t, s, "b", put(fmt.Sprintf("k%d", i), uint64(i), "v"))
	}
	before := mustHead(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	s = openTestStoreAt(t, path, Options{})
	srv := httptest.NewServer(NewHandler(s, nil))
	t.Cleanup(srv.Close)
	c := NewClient("sh-test", srv.URL, nil)
	for name, sh := range map[string]shard{"store": s, "wire": c} {
		t.Run(name, func(t *testing.T) {
			from := mustHead(t, s).Head
			req := ChangesRequest{Since: before.Head, LogID: before.ID, Heartbeat: MaxChangesHeartbeat}
			following := make(chan struct{})
			done := make(chan []Change, 1)
			go func() {
				first := true
				seen, _, err := follow(t, sh, req, func(seen []Change, _ ChangeBatch) bool {
					if first {
						first = false
						close(following)
					}
					return len(seen) >= int(from-before.Head)+3
				})
				if err != nil {
					t.Errorf("Changes(since %d under %s) on the reopened file = %v, want nil", before.Head, before.ID, err)
				}
				done <- seen
			}()
			<-following
			for i := 1; i <= 3; i++ {
				mustApply(t, s, "b", put(fmt.Sprintf("%s-%d", name, i), uint64(10+i), "v"))
			}
			seen := <-done
			if got, want := len(seen), int(from-before.Head)+3; got != want {
				t.Fatalf("%d changes, want %d: %v", got, want, changesOf(seen))
			}
			for i, ch := range seen {
				if ch.Seq != before.Head+1+uint64(i) {
					t.Errorf("change %d has seq %d, want %d", i, ch.Seq, before.Head+1+uint64(i))
				}
			}
		})
	}
}
