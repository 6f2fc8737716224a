package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
)

// txnShard is a shard that applies transactions: both ends offer it.
type txnShard interface {
	shard
	Txn(ctx context.Context, writes []TxnWrite) ([]Result, error)
}

var (
	_ txnShard = (*Store)(nil)
	_ txnShard = (*Client)(nil)
)

func tw(bucket string, w Write) TxnWrite { return TxnWrite{Bucket: bucket, Write: w} }

func mustGet(t testing.TB, sh shard, bucket, key string) Record {
	t.Helper()
	rec, err := sh.Get(context.Background(), bucket, []byte(key))
	if err != nil {
		t.Fatalf("Get(%q, %q) = %v, want nil", bucket, key, err)
	}
	return rec
}

func absentKey(t testing.TB, sh shard, bucket, key string) {
	t.Helper()
	if rec, err := sh.Get(context.Background(), bucket, []byte(key)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(%q, %q) = %s, %v, want ErrNotFound", bucket, key, show(rec), err)
	}
}

// TestTxn checks that a transaction across buckets applies all of its
// writes or none: a header written iff it is at the version the writer read,
// with the records that go with it, the way a conversation's append does.
func TestTxn(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		ts := sh.(txnShard)
		ctx := context.Background()
		mustApply(t, sh, "contexts", put("h", 5, "header-5"))

		// The condition holds: every write applies.
		res, err := ts.Txn(ctx, []TxnWrite{
			tw("contexts", cond(put("h", 6, "header-6"), CondVersion, 5)),
			tw("messages", put("m1", 6, "one")),
			tw("messages", put("m2", 6, "two")),
		})
		if err != nil {
			t.Fatalf("Txn(header at 5) = %v, want nil", err)
		}
		want := []Result{{Outcome: Applied, PrevVersion: 5}, {Outcome: Applied}, {Outcome: Applied}}
		if fmt.Sprint(res) != fmt.Sprint(want) {
			t.Errorf("Txn(header at 5) = %v, want %v", res, want)
		}
		if got := mustGet(t, sh, "messages", "m2"); string(got.Value) != "two" || got.Version != 6 {
			t.Errorf("Get(messages, m2) = %s, want two at 6", show(got))
		}

		// A second writer that read version 5 loses: nothing it sent lands.
		res, err = ts.Txn(ctx, []TxnWrite{
			tw("messages", put("m3", 7, "three")),
			tw("contexts", cond(put("h", 7, "header-7"), CondVersion, 5)),
		})
		if err != nil {
			t.Fatalf("Txn(header at 5, held 6) = %v, want nil", err)
		}
		want = []Result{{Outcome: Aborted}, {Outcome: Conflict, PrevVersion: 6}}
		if fmt.Sprint(res) != fmt.Sprint(want) {
			t.Errorf("Txn(header at 5, held 6) = %v, want %v", res, want)
		}
		absentKey(t, sh, "messages", "m3")
		if got := mustGet(t, sh, "contexts", "h"); string(got.Value) != "header-6" {
			t.Errorf("Get(contexts, h) = %s, want header-6", show(got))
		}

		// A conditional write whose condition holds but that is not newer
		// than what is held is Stale, and fails the transaction too.
		res, err = ts.Txn(ctx, []TxnWrite{
			tw("contexts", cond(put("h", 6, "other"), CondExact, 6)),
			tw("messages", put("m9", 6, "nine")),
		})
		if err != nil {
			t.Fatalf("Txn(stale header) = %v, want nil", err)
		}
		want = []Result{{Outcome: Stale, PrevVersion: 6}, {Outcome: Aborted}}
		if fmt.Sprint(res) != fmt.Sprint(want) {
			t.Errorf("Txn(stale header) = %v, want %v", res, want)
		}
		absentKey(t, sh, "messages", "m9")

		// A replica replaying a transaction it partly holds: what it holds
		// is Stale, the rest applies, and the condition-free replay never
		// aborts.
		res, err = ts.Txn(ctx, []TxnWrite{
			tw("contexts", put("h", 6, "header-6")),
			tw("messages", put("m2", 6, "two")),
			tw("messages", put("m4", 8, "four")),
		})
		if err != nil {
			t.Fatalf("Txn(replay) = %v, want nil", err)
		}
		want = []Result{{Outcome: Stale, PrevVersion: 6}, {Outcome: Stale, PrevVersion: 6}, {Outcome: Applied}}
		if fmt.Sprint(res) != fmt.Sprint(want) {
			t.Errorf("Txn(replay) = %v, want %v", res, want)
		}

		// The change log holds exactly the applied writes, each with its
		// own bucket.
		seen, _ := mustCatchUp(t, sh, ChangesRequest{})
		var got []string
		for _, c := range seen {
			got = append(got, fmt.Sprintf("%s/%s@%d", c.Bucket, c.Key, c.Version))
		}
		wantLog := "[contexts/h@5 contexts/h@6 messages/m1@6 messages/m2@6 messages/m4@8]"
		if fmt.Sprint(got) != wantLog {
			t.Errorf("change log = %v, want %s", got, wantLog)
		}
	})
}

// TestTxnInvalid checks that a malformed transaction is refused before
// anything is written.
func TestTxnInvalid(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		ts := sh.(txnShard)
		ok := tw("messages", put("ok", 1, "v"))
		tests := []struct {
			name   string
			writes []TxnWrite
		}{
			{"empty", nil},
			{"bad bucket", []TxnWrite{ok, tw("Bad-Bucket", put("k", 1, "v"))}},
			{"cluster bucket", []TxnWrite{ok, tw(ClusterBucket, put(MapKey, 1, "v"))}},
			{"no version", []TxnWrite{ok, tw("messages", put("k", 0, "v"))}},
			{"empty key", []TxnWrite{ok, tw("messages", put("", 1, "v"))}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if _, err := ts.Txn(context.Background(), tt.writes); !errors.Is(err, ErrInvalid) {
					t.Errorf("Txn(%s) = %v, want ErrInvalid", tt.name, err)
				}
				absentKey(t, sh, "messages", "ok")
			})
		}
	})
}

// TestTxnStaleEpoch checks that a transaction sent under an old cluster map
// is refused whole.
func TestTxnStaleEpoch(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		ts := sh.(txnShard)
		mustApply(t, sh, ClusterBucket, put(MapKey, 10, "map"))
		_, err := ts.Txn(WithEpoch(context.Background(), 9), []TxnWrite{tw("messages", put("m", 11, "v"))})
		if !errors.Is(err, ErrStaleEpoch) {
			t.Errorf("Txn(epoch 9, shard at 10) = %v, want ErrStaleEpoch", err)
		}
		absentKey(t, sh, "messages", "m")
	})
}

// TestTxnConcurrentAppends runs appenders that each read a header, then
// write the next record and the header iff the header is unchanged: every
// transaction that reports Applied must have its record, and the records
// must be exactly the count the header ends at, none lost or doubled.
func TestTxnConcurrentAppends(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		ts := sh.(txnShard)
		ctx := context.Background()
		mustApply(t, sh, "contexts", put("h", 1, "0"))
		const writers, each = 8, 20
		var mu sync.Mutex // guards version and applied
		version, applied := uint64(1), 0
		var wg sync.WaitGroup
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for done, tries := 0, 0; done < each && tries < 100*each; tries++ {
					h, err := sh.Get(ctx, "contexts", []byte("h"))
					if err != nil {
						t.Errorf("Get(h) = %v", err)
						return
					}
					var n int
					fmt.Sscan(string(h.Value), &n)
					mu.Lock()
					version++
					v := version
					mu.Unlock()
					res, err := ts.Txn(ctx, []TxnWrite{
						tw("contexts", cond(put("h", v, fmt.Sprint(n+1)), CondVersion, h.Version)),
						tw("messages", put(fmt.Sprintf("m%05d", n+1), v, "x")),
					})
					if err != nil {
						t.Errorf("Txn = %v", err)
						return
					}
					if res[0].Outcome == Applied {
						if res[1].Outcome != Applied {
							t.Errorf("Txn = %v: header applied without its record", res)
						}
						mu.Lock()
						applied++
						mu.Unlock()
						done++
					}
				}
			}()
		}
		wg.Wait()
		h := mustGet(t, sh, "contexts", "h")
		recs, _ := scanAll(t, sh, "messages", ScanOptions{Prefix: []byte("m"), Limit: 1000})
		if string(h.Value) != fmt.Sprint(applied) || len(recs) != applied || applied != writers*each {
			t.Errorf("header %s, %d records, %d applied; want all %d", h.Value, len(recs), applied, writers*each)
		}
		for i, r := range recs {
			if want := fmt.Sprintf("m%05d", i+1); string(r.Key) != want {
				t.Fatalf("record %d is %q, want %q", i, r.Key, want)
			}
		}
	})
}

// TestHandlerMalformedTxn checks that a transaction body the handler cannot
// read is a 400 that writes nothing.
func TestHandlerMalformedTxn(t *testing.T) {
	ok := appendTxn(nil, []TxnWrite{tw("messages", put("k", 1, "v"))})
	bodies := []struct {
		name string
		body []byte
	}{
		{"empty body", nil},
		{"bucket only", []byte{8, 'm', 'e', 's', 's', 'a', 'g', 'e', 's'}},
		{"bucket shorter than its length", []byte{8, 'm', 'e'}},
		{"overlong bucket", append([]byte{40}, make([]byte, 40)...)},
		{"valid write then garbage", append(slices.Clone(ok), 0)},
		{"valid write then bad bucket", appendTxn(slices.Clone(ok), []TxnWrite{tw("Bad", put("k", 1, "v"))})},
		{"valid write then version 0", appendTxn(slices.Clone(ok), []TxnWrite{tw("messages", put("k2", 0, "v"))})},
	}
	s, _, srv := openTestClient(t)
	for _, tt := range bodies {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Post(srv.URL+pathTxn, "application/octet-stream", bytes.NewReader(tt.body))
			if err != nil {
				t.Fatalf("POST %x: %v", tt.body, err)
			}
			checkErrorAnswer(t, resp, http.StatusBadRequest, "invalid_argument")
			if n := totalKeys(t, s); n != 0 {
				t.Errorf("after POST %x: %d records held, want 0", tt.body, n)
			}
		})
	}
}

// TestWrittenBytes checks that a commit reports what it wrote to the file,
// and that a small write costs a small number of bytes however large the
// records of the bucket are, once they are not its neighbours. (BoltDB
// rewrites a whole leaf, and a leaf never holds fewer than two keys: a
// write beside a large value rewrites it. Appended messages are each
// other's neighbours, at the end of their range.)
func TestWrittenBytes(t *testing.T) {
	var mu sync.Mutex // guards last
	var last int64
	s := openTestStoreAt(t, t.TempDir()+"/shard.db", Options{NoSync: true, Written: func(n int64) {
		mu.Lock()
		last = n
		mu.Unlock()
	}})
	written := func(w Write) int64 {
		t.Helper()
		mustApply(t, s, "messages", w)
		mu.Lock()
		defer mu.Unlock()
		return last
	}
	kb := string(make([]byte, 1024)) // a message's size
	var small, again int64
	for i := range 8 {
		small = written(put(fmt.Sprintf("a%02d", i), uint64(1+i), kb))
	}
	big := written(put("0", 10, string(make([]byte, 1<<20)))) // before them all
	for i := range 8 {
		again = written(put(fmt.Sprintf("b%02d", i), uint64(11+i), kb))
	}
	if big < 1<<20 {
		t.Errorf("a commit of a 1 MiB value wrote %d bytes, want at least 1 MiB", big)
	}
	if small <= 0 || again > 4*small {
		t.Errorf("a small commit wrote %d bytes first, %d beside a 1 MiB record; want about the same", small, again)
	}
}
