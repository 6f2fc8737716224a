package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/internal/chatgen"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/maintenance"

	"github.com/go-kvdb/go-kvdb/backup"
	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func chatDoc(seed int) map[string]any {
	return map[string]any{"metadata": map[string]any{"model": "llama3", "tags": []string{"chat"}}, "content": chatgen.Body(seed)}
}

// fillChats stores n chat contexts c<from>… in topic (created if absent).
func fillChats(t testing.TB, tc *testCluster, topic string, from, n int) {
	t.Helper()
	if r := call(t, "POST", tc.URL+"/api/v1/topics", map[string]any{"name": topic}); r.Status != 201 && r.Status != 409 {
		t.Fatalf("create topic %s = %d %s", topic, r.Status, r.Raw)
	}
	for i := from; i < from+n; i++ {
		tc.putContext(t, topic, fmt.Sprintf("c%03d", i), chatDoc(i))
	}
}

// trainDict posts a training and decodes its answer.
func trainDict(t testing.TB, url, query string) (response, maintenance.TrainResult) {
	t.Helper()
	r := call(t, "POST", url+"/api/v1/admin/compression/train"+query, nil)
	var res maintenance.TrainResult
	if r.Status == 200 {
		if err := json.Unmarshal(r.Raw, &res); err != nil {
			t.Fatalf("train answer %s: %v", r.Raw, err)
		}
	}
	return r, res
}

// storedContexts returns every context record of a store, by key.
func storedContexts(t testing.TB, st *storage.Store) map[string]storage.Record {
	t.Helper()
	out := map[string]storage.Record{}
	var after []byte
	for {
		p, err := st.Scan(context.Background(), schema.BucketContexts, storage.ScanOptions{After: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range p.Records {
			out[string(rec.Key)] = rec
		}
		if !p.More || len(p.Records) == 0 {
			return out
		}
		after = p.Records[len(p.Records)-1].Key
	}
}

// codecOf reports the codec byte of a stored (plaintext) context.
func codecOf(t testing.TB, value []byte) byte {
	t.Helper()
	b, err := codec.BodyCodec(value)
	if err != nil {
		t.Fatalf("stored context: %v", err)
	}
	return b
}

// dictRecord reads a record of the dictionary bucket from a store.
func dictRecord(st *storage.Store, key string) (storage.Record, bool) {
	rec, err := st.Get(context.Background(), schema.BucketDicts, []byte(key))
	return rec, err == nil && !rec.Tombstone
}

// getAll reads every context of topic through url: body and ETag by id.
func getAll(t testing.TB, url, topic string, ids []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, id := range ids {
		r := must(t, call(t, "GET", url+"/api/v1/topics/"+topic+"/contexts/"+id, nil), 200, "GET "+id)
		out[id] = r.Header.Get("ETag") + " " + string(r.Raw)
	}
	return out
}

func ids(from, n int) []string {
	var out []string
	for i := from; i < from+n; i++ {
		out = append(out, fmt.Sprintf("c%03d", i))
	}
	return out
}

func TestTrainDictionary(t *testing.T) {
	tc := newSecureCluster(t, 3, func(c *Config) { c.CacheBytes = 0 })
	fillChats(t, tc, "chat", 0, 80)
	before := getAll(t, tc.URL, "chat", ids(0, 80))

	r, res := trainDict(t, tc.URL, "")
	if r.Status != 200 {
		t.Fatalf("train = %d %s", r.Status, r.Raw)
	}
	if res.ID < codec.MinDictID || res.ID > codec.MaxDictID || res.Samples != 80 || res.Measured != 8 || res.DictionaryBytes == 0 || res.DictionaryBytes > codec.DictSize+4096 {
		t.Errorf("train = %+v: want an id in zstd's user range, 80 samples, 8 measured, a dictionary of at most 64 KiB and its tables", res)
	}
	if !(res.RatioAfter < res.RatioBefore) || res.RatioBefore <= 0 {
		t.Errorf("train ratios: %.3f before, %.3f after; want an improvement", res.RatioBefore, res.RatioAfter)
	}
	// Stored on every shard, with the pointer.
	for i, st := range tc.stores {
		rec, ok := dictRecord(st, strconv.FormatUint(uint64(res.ID), 10))
		if !ok {
			t.Fatalf("shard %d holds no dictionary %d", i+1, res.ID)
		}
		if _, err := codec.ParseDictRecord(res.ID, rec.Value); err != nil {
			t.Errorf("shard %d: %v", i+1, err)
		}
		rec, ok = dictRecord(st, codec.DictCurrentKey)
		if p, err := codec.ParsePointer(rec); !ok || err != nil || p.ID != res.ID {
			t.Errorf("shard %d current pointer = %+v, %v; want %d", i+1, p, err, res.ID)
		}
	}
	st := must(t, call(t, "GET", tc.URL+"/api/v1/admin/compression", nil), 200, "compression status")
	if cur, _ := st.JSON["current"].(map[string]any); cur == nil || cur["id"] != float64(res.ID) {
		t.Errorf("compression status = %s, want current %d", st.Raw, res.ID)
	}
	if g := testutil.ToFloat64(tc.router.m.DictionaryID); g != float64(res.ID) {
		t.Errorf("kvdb_codec_dictionary_id = %v, want %d", g, res.ID)
	}
	if n := testutil.ToFloat64(tc.router.m.DictionaryTrainings); n != 1 {
		t.Errorf("kvdb_codec_dictionary_trainings_total = %v, want 1", n)
	}

	// Old records read as before; new ones are written with the dictionary.
	if after := getAll(t, tc.URL, "chat", ids(0, 80)); !equalMaps(after, before) {
		t.Errorf("plain zstd records read differently after training")
	}
	in0, out0 := testutil.ToFloat64(tc.router.m.CodecInputBytes), testutil.ToFloat64(tc.router.m.CodecOutputBytes)
	fillChats(t, tc, "chat", 100, 20)
	if in, out := testutil.ToFloat64(tc.router.m.CodecInputBytes)-in0, testutil.ToFloat64(tc.router.m.CodecOutputBytes)-out0; in == 0 || out >= in*res.RatioBefore {
		t.Errorf("codec metrics after training: %v in, %v out; want counted, and better than %.3f", in, out, res.RatioBefore)
	}
	counts := map[byte]int{}
	for _, st := range tc.stores {
		for k, rec := range storedContexts(t, st) {
			if strings.HasPrefix(k, "chat\x00c1") {
				counts[codecOf(t, rec.Value)]++
			}
		}
	}
	if counts[codec.ZstdDict] != 20 {
		t.Errorf("codecs of the contexts written after training = %v, want 20 × %d", counts, codec.ZstdDict)
	}
	for i := 100; i < 120; i++ {
		got := documentOf(t, tc, "chat", fmt.Sprintf("c%03d", i))
		wantBody, _ := json.Marshal(chatgen.Body(i))
		gotBody, _ := json.Marshal(map[string]any{"text": got.Content.Text, "messages": unseq(t, got.Content.Messages, 1)})
		if !bytes.Equal(normJSON(t, gotBody), normJSON(t, wantBody)) {
			t.Fatalf("c%03d read back %s, want %s", i, gotBody, wantBody)
		}
	}

	// Message records are compressed with the dictionary too, and read back.
	var parts []string // a turn long enough to compress (128 bytes at least)
	for _, m := range chatgen.Body(7)["messages"].([]map[string]string)[1:] {
		parts = append(parts, m["content"])
	}
	turn := strings.Join(parts, " ")
	must(t, call(t, "POST", tc.URL+"/api/v1/topics/chat/contexts/c100/messages", map[string]any{"messages": []map[string]string{{"role": "assistant", "content": turn}}}), 200, "append")
	n := len(chatgen.Body(100)["messages"].([]map[string]string)) + 1
	for _, st := range tc.stores {
		rec, err := st.Get(context.Background(), schema.BucketMessages, schema.MessageKey("chat", "c100", uint64(n)))
		if errors.Is(err, storage.ErrNotFound) {
			continue // not an owner
		}
		if err != nil || len(rec.Value) < 2 || rec.Value[1] != codec.ZstdDict {
			t.Errorf("message record %d = %v (codec byte %v), want compressed with the dictionary", n, err, rec.Value[:min(2, len(rec.Value))])
		}
	}
	if got := messagesOf(t, tc, "chat", "c100"); len(got) != n || got[n-1].Content != turn {
		t.Errorf("after the append c100 has %d messages, the last %.40q; want %d, the last %.40q", len(got), got[len(got)-1].Content, n, turn)
	}
}

func normJSON(t testing.TB, b []byte) []byte {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(v)
	return out
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// startRouter serves a router of tc's shards and returns its URL.
func (tc *testCluster) startRouter(t testing.TB, mod func(*Config)) (*Router, string) {
	t.Helper()
	cfg := Config{Nodes: tc.want, RepairInterval: time.Hour, Registry: prometheus.NewRegistry()}
	if mod != nil {
		mod(&cfg)
	}
	rt := tc.newRouter(t, cfg)
	srv := httptest.NewServer(rt.Handler())
	t.Cleanup(srv.Close)
	waitFor(t, "cluster map loaded", func() bool { return rt.topo.Load().Epoch > 0 })
	return rt, srv.URL
}

func TestOtherRoutersLearnTheDictionary(t *testing.T) {
	tc := newSecureCluster(t, 3, func(c *Config) { c.CacheBytes = 0 })
	// A second router, up before the training: it learns the dictionary
	// only from the records that need it.
	second, secondURL := tc.startRouter(t, nil)
	fillChats(t, tc, "chat", 0, 60)
	r, res := trainDict(t, tc.URL, "")
	if r.Status != 200 {
		t.Fatalf("train = %d %s", r.Status, r.Raw)
	}
	fillChats(t, tc, "chat", 100, 10)
	want := getAll(t, tc.URL, "chat", append(ids(0, 60), ids(100, 10)...))
	if _, known := second.codec.Dict(res.ID); known || second.codec.Current() != 0 {
		t.Fatalf("the second router knew dictionary %d before reading a record that needs it", res.ID)
	}
	if got := getAll(t, secondURL, "chat", append(ids(0, 60), ids(100, 10)...)); !equalMaps(got, want) {
		t.Errorf("the second router reads the contexts differently")
	}
	if _, known := second.codec.Dict(res.ID); !known {
		t.Errorf("the second router read records of dictionary %d without loading it", res.ID)
	}
	// Having met a new dictionary, it reads the pointer again and writes with it.
	waitFor(t, "second router adopts the dictionary", func() bool { return second.codec.Current() == res.ID })
	call(t, "PUT", secondURL+"/api/v1/topics/chat/contexts/s1", chatDoc(500))
	var found bool
	for _, st := range tc.stores {
		if rec, ok := storedContexts(t, st)["chat\x00s1"]; ok {
			found = codecOf(t, rec.Value) == codec.ZstdDict
		}
	}
	if !found {
		t.Errorf("a context written through the second router is not compressed with the dictionary")
	}

	// A router started now (a restart) loads it at start.
	restarted, restartedURL := tc.startRouter(t, nil)
	waitFor(t, "restarted router loads the dictionary", func() bool { return restarted.codec.Current() == res.ID })
	if got := getAll(t, restartedURL, "chat", append(ids(0, 60), ids(100, 10)...)); !equalMaps(got, want) {
		t.Errorf("the restarted router reads the contexts differently")
	}
	must(t, call(t, "PUT", restartedURL+"/api/v1/topics/chat/contexts/s2", chatDoc(501)), 201, "PUT through the restarted router")
	if d := must(t, call(t, "GET", secondURL+"/api/v1/topics/chat/contexts/s2", nil), 200, "GET s2"); !strings.Contains(string(d.Raw), `"role":"system"`) {
		t.Errorf("s2 through the second router = %s", d.Raw)
	}
}

func TestTrainTooFewSamples(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	fillChats(t, tc, "chat", 0, maintenance.TrainMinSamples-1)
	r, _ := trainDict(t, tc.URL, "")
	if r.Status != 412 || r.errCode() != string(apierr.CodeFailedPrecondition) || !strings.Contains(r.errMessage(), "at least 50") {
		t.Errorf("train on %d contexts = %d %s, want 412 asking for at least 50", maintenance.TrainMinSamples-1, r.Status, r.Raw)
	}
	for _, bad := range []string{"?rewrite=yes", "?rewrite=1"} {
		if r, _ := trainDict(t, tc.URL, bad); r.Status != 400 || r.errCode() != string(apierr.CodeInvalidArgument) {
			t.Errorf("train%s = %d %s, want 400", bad, r.Status, r.Raw)
		}
	}
	if got := totalRecords(t, tc); got[schema.BucketDicts] != 0 {
		t.Errorf("after refused trainings the shards hold %d dictionary records, want none", got[schema.BucketDicts])
	}
	if tc.router.codec.Current() != 0 || testutil.ToFloat64(tc.router.m.DictionaryTrainings) != 0 {
		t.Errorf("a refused training changed the codec")
	}
	st := must(t, call(t, "GET", tc.URL+"/api/v1/admin/compression", nil), 200, "status")
	if st.JSON["current"] != nil {
		t.Errorf("status after refused trainings = %s, want no current dictionary", st.Raw)
	}
	if r := call(t, "POST", tc.URL+"/api/v1/admin/compression/rewrite?wait=true", nil); r.Status != 412 {
		t.Errorf("rewrite without a dictionary = %d %s, want 412", r.Status, r.Raw)
	}
	if r := call(t, "POST", tc.URL+"/api/v1/admin/compression/rewrite?wait=soon", nil); r.Status != 400 {
		t.Errorf("rewrite?wait=soon = %d %s, want 400", r.Status, r.Raw)
	}
}

// dictFault fails writes to the dictionary bucket while armed.
type dictFault struct {
	Shard
	streams
	armed atomic.Bool
}

func (f *dictFault) Apply(ctx context.Context, b string, w []storage.Write) ([]storage.Result, error) {
	if b == schema.BucketDicts && f.armed.Load() {
		return nil, errDown
	}
	return f.Shard.Apply(ctx, b, w)
}

func TestTrainNeedsEveryShard(t *testing.T) {
	tc := &testCluster{reg: prometheus.NewRegistry()}
	var faults []*dictFault
	for range 3 {
		n := tc.addShard(t)
		f := &dictFault{Shard: n.Shard, streams: streams{n.Shard}}
		n.Shard = f
		faults = append(faults, f)
		tc.want = append(tc.want, n)
	}
	tc.router, tc.URL = tc.startRouter(t, func(c *Config) { c.Registry = tc.reg })
	fillChats(t, tc, "chat", 0, 60)

	// A shard that does not take the dictionary: 503, nothing current.
	faults[2].armed.Store(true)
	r, _ := trainDict(t, tc.URL, "")
	if r.Status != 503 || r.errCode() != string(apierr.CodeUnavailable) || !strings.Contains(r.errMessage(), "not made current") || !strings.Contains(r.errMessage(), "sh-3") {
		t.Errorf("train with sh-3 refusing = %d %s, want 503 naming sh-3", r.Status, r.Raw)
	}
	for i, st := range tc.stores {
		if _, ok := dictRecord(st, codec.DictCurrentKey); ok {
			t.Errorf("shard %d holds a current pointer after a failed training", i+1)
		}
	}
	if tc.router.codec.Current() != 0 {
		t.Errorf("a failed training made dictionary %d current", tc.router.codec.Current())
	}
	tc.putContext(t, "chat", "after", chatDoc(99))
	for _, st := range tc.stores {
		if rec, ok := storedContexts(t, st)["chat\x00after"]; ok && codecOf(t, rec.Value) != codec.Zstd {
			t.Errorf("a write after a failed training used codec %d, want plain zstd", codecOf(t, rec.Value))
		}
	}

	// A shard down: 503 before anything is built.
	faults[2].armed.Store(false)
	tc.faults[1].down.Store(true)
	waitFor(t, "sh-2 marked down", func() bool { return !tc.router.topo.Load().All[1].Up() })
	if r, _ := trainDict(t, tc.URL, ""); r.Status != 503 || !strings.Contains(r.errMessage(), "sh-2") {
		t.Errorf("train with sh-2 down = %d %s, want 503 naming sh-2", r.Status, r.Raw)
	}
	if tc.router.codec.Current() != 0 {
		t.Errorf("a training with a shard down made a dictionary current")
	}

	// All back: it works, and the dictionary of the failed attempt stays
	// unused (ids are never reused).
	tc.faults[1].down.Store(false)
	waitFor(t, "sh-2 up", func() bool { return tc.router.topo.Load().All[1].Up() })
	if r, res := trainDict(t, tc.URL, ""); r.Status != 200 || tc.router.codec.Current() != res.ID {
		t.Fatalf("train with every shard = %d %s", r.Status, r.Raw)
	}
}

// repairMeetsTraining holds a training's create-only write of its
// dictionary until a sync pass has copied the dictionary here from a
// shard the training reached first: a repair or rebalance pass under way
// (a shard came back, the repair interval) meets a training halfway.
type repairMeetsTraining struct {
	Shard
	streams
	t         testing.TB
	first     *storage.Store // a shard the training writes to as well
	copyDicts func()         // copies the dictionary bucket, as every pass does first
	once      sync.Once
}

func (f *repairMeetsTraining) Apply(ctx context.Context, b string, w []storage.Write) ([]storage.Result, error) {
	if b == schema.BucketDicts && w[0].Cond == storage.CondAbsent {
		f.once.Do(func() {
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if _, ok := dictRecord(f.first, string(w[0].Key)); ok {
					break
				}
				if time.Now().After(deadline) {
					f.t.Errorf("dictionary %s not on the first shard after 10s", w[0].Key)
					return
				}
			}
			f.copyDicts()
		})
	}
	return f.Shard.Apply(ctx, b, w)
}

func TestTrainMeetsARepairPass(t *testing.T) {
	tc := &testCluster{reg: prometheus.NewRegistry()}
	for range 3 {
		tc.want = append(tc.want, tc.addShard(t))
	}
	slow := &repairMeetsTraining{Shard: tc.want[2].Shard, streams: streams{tc.want[2].Shard}, t: t, first: tc.stores[0]}
	tc.want[2].Shard = slow
	tc.router, tc.URL = tc.startRouter(t, func(c *Config) { c.Registry = tc.reg })
	slow.copyDicts = func() {
		if _, err := tc.router.maint.SyncDicts(context.Background(), tc.router.topo.Load().All); err != nil {
			t.Errorf("sync the dictionaries: %v", err)
		}
	}
	fillChats(t, tc, "chat", 0, 60)

	// The pass copies the dictionary to sh-3 (and maybe sh-2) before the
	// training's own write arrives: the shard holds that very record,
	// which is no conflict.
	r, res := trainDict(t, tc.URL, "")
	if r.Status != 200 || tc.router.codec.Current() != res.ID {
		t.Fatalf("train while a repair pass copies its dictionary = %d %s, want 200", r.Status, r.Raw)
	}
	for i, st := range tc.stores {
		if _, ok := dictRecord(st, strconv.FormatUint(uint64(res.ID), 10)); !ok {
			t.Errorf("shard %d holds no dictionary %d", i+1, res.ID)
		}
	}
}

func TestRewriteKeepsDocuments(t *testing.T) {
	kr := keyring(t, newKey(t))
	tc := newSecureCluster(t, 3, func(c *Config) { c.CacheBytes = 0; c.Security.Keyring = kr })
	fillChats(t, tc, "chat", 0, 80)
	must(t, call(t, "PUT", tc.URL+"/api/v1/topics/chat/contexts/tiny", map[string]any{"content": map[string]any{"text": "hi"}}), 201, "tiny")
	all := append(ids(0, 80), "tiny")
	want := getAll(t, tc.URL, "chat", all)
	plainBytes := plaintextContextBytes(t, tc, kr)

	r, res := trainDict(t, tc.URL, "?rewrite=true")
	if r.Status != 200 || res.Rewrite == nil {
		t.Fatalf("train?rewrite=true = %d %s", r.Status, r.Raw)
	}
	rw := res.Rewrite
	if rw.Dictionary != res.ID || rw.Scanned != 81 || rw.Rewritten != 80 || rw.Current != 1 || rw.Failed != 0 || len(rw.Errors) > 0 {
		t.Errorf("rewrite = %+v, want 80 of 81 rewritten under %d (the tiny one stays raw)", rw, res.ID)
	}
	if !(rw.BytesAfter < rw.BytesBefore) {
		t.Errorf("rewrite bytes %d → %d, want fewer", rw.BytesBefore, rw.BytesAfter)
	}
	if after := plaintextContextBytes(t, tc, kr); after >= plainBytes {
		t.Errorf("stored context bytes %d → %d after the rewrite, want fewer", plainBytes, after)
	}
	if got := getAll(t, tc.URL, "chat", all); !equalMaps(got, want) {
		for id := range want {
			if got[id] != want[id] {
				t.Errorf("%s after the rewrite = %s, want %s", id, got[id], want[id])
				break
			}
		}
	}
	// Still sealed on disk, the dictionary included (it is made of stored text).
	for i, st := range tc.stores {
		for k, rec := range storedContexts(t, st) {
			if !codec.IsSealed(rec.Value) {
				t.Fatalf("shard %d: context %q is not sealed after the rewrite", i+1, k)
			}
		}
		if rec, ok := dictRecord(st, strconv.FormatUint(uint64(res.ID), 10)); !ok || !codec.IsSealed(rec.Value) {
			t.Errorf("shard %d: the dictionary record is not sealed", i+1)
		}
	}
	// Again: nothing left to do.
	r = must(t, call(t, "POST", tc.URL+"/api/v1/admin/compression/rewrite?wait=true", nil), 200, "second rewrite")
	var again maintenance.RewriteResult
	json.Unmarshal(r.Raw, &again)
	if again.Rewritten != 0 || again.Current != 81 {
		t.Errorf("second rewrite = %s, want nothing rewritten", r.Raw)
	}
	must(t, call(t, "POST", tc.URL+"/api/v1/admin/compression/rewrite", nil), 202, "background rewrite")
}

// plaintextContextBytes sums the stored contexts' values once opened.
func plaintextContextBytes(t testing.TB, tc *testCluster, kr *codec.Keyring) int64 {
	t.Helper()
	var n int64
	for _, st := range tc.stores {
		for _, rec := range storedContexts(t, st) {
			v, err := kr.Open(schema.BucketContexts, rec.Key, rec.Value)
			if err != nil {
				t.Fatal(err)
			}
			n += int64(len(v))
		}
	}
	return n
}

func TestRewriteLeavesConcurrentWritesAlone(t *testing.T) {
	tc := newSecureCluster(t, 1, func(c *Config) { c.CacheBytes = 0 })
	fillChats(t, tc, "chat", 0, 60)
	if r, _ := trainDict(t, tc.URL, ""); r.Status != 200 {
		t.Fatalf("train = %d %s", r.Status, r.Raw)
	}
	// The rewrite's condition: a record rewritten since it was read is not
	// touched (the newer write already used the current dictionary).
	st := tc.stores[0]
	rec := storedContexts(t, st)["chat\x00c001"]
	out, changed, err := tc.router.codec.Recompress(rec.Value)
	if err != nil || !changed {
		t.Fatalf("recompress = %v, %v", changed, err)
	}
	tc.putContext(t, "chat", "c001", chatDoc(1001))
	res, err := tc.router.topo.Load().All[0].Shard.Apply(context.Background(), schema.BucketContexts,
		[]storage.Write{{Record: storage.Record{Key: rec.Key, Version: rec.Version, Value: out}, Cond: storage.CondRewrite}})
	if err != nil || res[0].Outcome != storage.Conflict {
		t.Fatalf("a rewrite over a newer write = %+v, %v; want a conflict", res, err)
	}
	wantText := chatgen.Body(1001)["text"]
	if d := documentOf(t, tc, "chat", "c001"); d.Content.Text != wantText {
		t.Errorf("c001 text = %q, want the concurrent write's %q", d.Content.Text, wantText)
	}
}

func TestDictionariesSurviveBackupAndRestore(t *testing.T) {
	src := newSecureCluster(t, 3, func(c *Config) { c.CacheBytes = 0 })
	fillChats(t, src, "chat", 0, 60)
	r, res := trainDict(t, src.URL, "?rewrite=true")
	if r.Status != 200 {
		t.Fatalf("train = %d %s", r.Status, r.Raw)
	}
	fillChats(t, src, "chat", 100, 10)
	all := append(ids(0, 60), ids(100, 10)...)
	want := getAll(t, src.URL, "chat", all)

	info, sections := fetchBackup(t, src.URL)
	var recs []bucketRecord
	for _, name := range info.Shards {
		sec := sections[name]
		if len(sec) == 0 || sec[0].bucket != schema.BucketDicts {
			t.Errorf("section %s does not begin with the dictionaries", name)
		}
		recs = append(recs, sec...)
	}

	dst := newSecureCluster(t, 2, func(c *Config) { c.CacheBytes = 0; c.Replicas = 2 })
	body := restoreBody(t, recs)
	// Every shard's section carries the dictionary and the pointer: 3 × 2.
	if r, dry := postRestore(t, dst.URL, body, true); r.Status != 200 || dry.Buckets[schema.BucketDicts] == nil || dry.Buckets[schema.BucketDicts].Applied != 6 {
		t.Errorf("dry run = %d %s, want the 6 dictionary records to apply", r.Status, r.Raw)
	}
	if got := totalRecords(t, dst); got[schema.BucketDicts] != 0 {
		t.Errorf("a dry run wrote %d dictionary records", got[schema.BucketDicts])
	}
	r, rep := postRestore(t, dst.URL, body, false)
	if r.Status != 200 || rep.Buckets[schema.BucketDicts].Applied != 2 || rep.Buckets[schema.BucketDicts].Skipped != 4 || rep.Buckets[schema.BucketContexts].Applied != int64(len(all)) {
		t.Fatalf("restore = %d %s", r.Status, r.Raw)
	}
	for i, st := range dst.stores {
		if _, ok := dictRecord(st, strconv.FormatUint(uint64(res.ID), 10)); !ok {
			t.Errorf("restored shard %d lacks dictionary %d", i+1, res.ID)
		}
	}
	if dst.router.codec.Current() != res.ID {
		t.Errorf("after the restore the router's dictionary is %d, want %d", dst.router.codec.Current(), res.ID)
	}
	if got := getAll(t, dst.URL, "chat", all); !equalMaps(got, want) {
		t.Errorf("restored contexts read differently")
	}

	// A restore body naming a key the router never writes is refused whole.
	bad := restoreBody(t, []bucketRecord{{schema.BucketDicts, backup.Record{Key: []byte("nope"), Version: 5, Value: []byte("x")}}})
	if r := call(t, "POST", dst.URL+"/api/v1/admin/restore", bad, "Content-Type", "application/x-kvdb-records"); r.Status != 400 {
		t.Errorf("restore of a stray dictionary key = %d %s, want 400", r.Status, r.Raw)
	}
}

func TestDictionariesReachEveryShard(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 3})
	fillChats(t, tc, "chat", 0, 60)
	r, res := trainDict(t, tc.URL, "")
	if r.Status != 200 {
		t.Fatalf("train = %d %s", r.Status, r.Raw)
	}
	key := strconv.FormatUint(uint64(res.ID), 10)

	// A shard that lost them (say, restored from an old file) gets them back by repair.
	for _, k := range []string{key, codec.DictCurrentKey} {
		rec, _ := dictRecord(tc.stores[1], k)
		if _, err := tc.stores[1].Purge(context.Background(), schema.BucketDicts, []storage.Record{{Key: []byte(k), Version: rec.Version}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := dictRecord(tc.stores[1], key); ok {
		t.Fatal("purge left the dictionary")
	}
	must(t, call(t, "POST", tc.URL+"/api/v1/admin/repair?wait=true", nil), 200, "repair")
	for _, k := range []string{key, codec.DictCurrentKey} {
		if _, ok := dictRecord(tc.stores[1], k); !ok {
			t.Errorf("after repair shard 2 lacks %s", k)
		}
	}

	// A shard that joins gets them in the rebalance.
	tc.setShape(append(tc.want, tc.addShard(t)), 1)
	must(t, call(t, "POST", tc.URL+"/api/v1/admin/reload", nil), 202, "reload")
	waitFor(t, "rebalance onto sh-4", func() bool {
		top := tc.router.topo.Load()
		return top.State == placement.StateStable && len(top.Cur.Ring.Nodes()) == 4
	})
	for _, k := range []string{key, codec.DictCurrentKey} {
		if _, ok := dictRecord(tc.stores[3], k); !ok {
			t.Errorf("the joining shard lacks %s", k)
		}
	}
	// Records moved to it read back.
	for _, id := range ids(0, 60) {
		must(t, call(t, "GET", tc.URL+"/api/v1/topics/chat/contexts/"+id, nil), 200, "GET "+id)
	}
}

func TestUnknownOrCorruptDictionary(t *testing.T) {
	tc := newSecureCluster(t, 2, func(c *Config) { c.CacheBytes = 0 })
	tc.createTopic(t, "chat")
	// A record compressed with a dictionary the cluster never had.
	const ghost = 987_654
	c, _ := codec.New(codec.Options{})
	ghostDict, err := codec.BuildDict(chatgen.Bodies(10_000, 200), ghost, 6) // not deterministic: one copy
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddDict(ghost, ghostDict); err != nil {
		t.Fatal(err)
	}
	c.SetCurrent(ghost)
	doc := &schema.Document{Metadata: schema.Metadata{ID: "x", CreatedAt: "2024-01-01T00:00:00Z"}}
	body, _ := json.Marshal(chatgen.Body(3))
	json.Unmarshal(body, &doc.Content)
	value, err := c.EncodeDocument(doc)
	if err != nil {
		t.Fatal(err)
	}
	key := []byte(schema.ContextKey("chat", "x"))
	write := func(bucket string, key []byte, v []byte) {
		t.Helper()
		for _, n := range tc.router.topo.Load().All {
			if _, err := n.Shard.Apply(context.Background(), bucket, []storage.Write{{Record: storage.Record{Key: key, Version: tc.router.clock.Next(), Value: v}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(schema.BucketContexts, key, value)
	r := call(t, "GET", tc.URL+"/api/v1/topics/chat/contexts/x", nil)
	if r.Status != 500 || r.errCode() != string(apierr.CodeInternal) {
		t.Errorf("GET of a context of an unknown dictionary = %d %s, want 500 internal", r.Status, r.Raw)
	}
	if _, err := tc.router.codec.AppendDocumentJSON(nil, value, true); !errors.Is(err, codec.ErrNoDict) || !strings.Contains(err.Error(), "no shard holds") {
		t.Errorf("render = %v, want ErrNoDict saying no shard holds it", err)
	}
	// The same dictionary, stored corrupt on every shard: still an error
	// that says so, never garbage.
	rec := codec.EncodeDictRecord(ghostDict)
	rec[len(rec)-10] ^= 0x55
	write(schema.BucketDicts, codec.DictKey(ghost), rec)
	time.Sleep(codec.DictRetry) // the failed load above is remembered this long
	if _, err := tc.router.codec.AppendDocumentJSON(nil, value, true); !errors.Is(err, codec.ErrNoDict) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("render with a corrupt dictionary = %v, want an error naming the checksum", err)
	}
	if r := call(t, "GET", tc.URL+"/api/v1/topics/chat/contexts/x", nil); r.Status != 500 {
		t.Errorf("GET with a corrupt dictionary = %d %s, want 500", r.Status, r.Raw)
	}
	// A sound copy on the shards: the record reads.
	write(schema.BucketDicts, codec.DictKey(ghost), codec.EncodeDictRecord(ghostDict))
	time.Sleep(codec.DictRetry)
	if _, err := tc.router.codec.AppendDocumentJSON(nil, value, true); err != nil {
		t.Errorf("render with the sound dictionary = %v", err)
	}
	d := documentOf(t, tc, "chat", "x")
	if d.Content.Text != chatgen.Body(3)["text"] {
		t.Errorf("context read with the sound dictionary = %+v", d)
	}
}
