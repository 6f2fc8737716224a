package vindex

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
)

// A saved and loaded index answers exactly as the original: same hits,
// versions and scores, deleted keys still deleted, tombstone versions kept.
func TestSaveLoadRoundTrip(t *testing.T) {
	base, queries := testSet(2500, 1), testSet(60, 2)
	x := newTestIndex(t, base)
	for i := 0; i < 300; i++ {
		x.Delete(keyOf(i), 2)
	}
	for i := 300; i < 400; i++ {
		x.Add(keyOf(i), 3, base.Row(i+1000))
	}
	path := filepath.Join(t.TempDir(), "a.vidx")
	if err := x.WriteFile(path, Meta{Watermark: 77, Label: []byte("label")}); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	y, meta, err := ReadFile(path)
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	defer y.Close()
	if meta.Watermark != 77 || string(meta.Label) != "label" {
		t.Errorf("ReadFile meta = %d, %q; want 77, label", meta.Watermark, meta.Label)
	}
	q := Query{Vector: queries.Row(0), K: 10}
	if res := search(t, y, q); !res.Exact || len(res.Hits) != 0 {
		t.Errorf("Search before SetReady = %v, exact %v; want exact, no hits", res.Hits, res.Exact)
	}
	y.SetReady(true)
	for qi := range queries.Len() {
		for _, ef := range []int{16, 64} {
			q := Query{Vector: queries.Row(qi), K: 10, Ef: ef}
			a, b := search(t, x, q), search(t, y, q)
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("query %d ef %d: loaded index answers %v, original %v", qi, ef, b, a)
			}
		}
	}
	xs, ys := x.Stats(), y.Stats()
	if xs != ys {
		t.Errorf("Stats after load = %+v, want %+v", ys, xs)
	}
	if ok, _ := y.Add(keyOf(5), 1, base.Row(5)); ok {
		t.Errorf("Add(%s, 1) over a loaded tombstone at 2 applied, want ignored", keyOf(5))
	}
	if v, live, ok := y.Version(keyOf(350)); v != 3 || !live || !ok {
		t.Errorf("Version(%s) after load = %d, %v, %v; want 3, true, true", keyOf(350), v, live, ok)
	}
	// The loaded index goes on taking writes like the original.
	if ok, err := y.Add("new", 1, base.Row(2)); !ok || err != nil {
		t.Fatalf("Add(new) after load = %v, %v", ok, err)
	}
	if res := search(t, y, Query{Vector: base.Row(2), K: 2}); len(res.Hits) != 2 || (res.Hits[0].Key != "new" && res.Hits[1].Key != "new") {
		t.Errorf("Search after Add(new) = %v, want new among the top 2", res.Hits)
	}
}

func TestEmptyIndexRoundTrip(t *testing.T) {
	x, _ := New(Config{Dim: 8})
	defer x.Close()
	var buf bytes.Buffer
	if err := x.Save(&buf, Meta{}); err != nil {
		t.Fatal(err)
	}
	y, _, err := Load(&buf)
	if err != nil {
		t.Fatalf("Load(empty) = %v", err)
	}
	defer y.Close()
	y.SetReady(true)
	if res := search(t, y, Query{Vector: []float32{1, 0, 0, 0, 0, 0, 0, 0}, K: 3}); len(res.Hits) != 0 || res.Exact {
		t.Errorf("Search(empty loaded) = %+v, want no hits, not exact", res)
	}
}

// Every damaged file is refused with ErrCorrupt, never loaded.
func TestDamagedFilesRefused(t *testing.T) {
	base := testSet(300, 1)
	x := newTestIndex(t, base)
	x.Delete(keyOf(3), 2)
	var buf bytes.Buffer
	if err := x.Save(&buf, Meta{Label: []byte("L")}); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	cases := map[string][]byte{
		"empty":         {},
		"header only":   good[:headerSize],
		"half":          good[:len(good)/2],
		"no trailer":    good[:len(good)-12],
		"short trailer": good[:len(good)-1],
		"extra byte":    append(bytes.Clone(good), 0),
		"not an index":  bytes.Repeat([]byte("x"), 200),
	}
	for _, off := range []int{9, 30, headerSize + 3, len(good) / 3, len(good) * 2 / 3, len(good) - 20, len(good) - 5} {
		b := bytes.Clone(good)
		b[off] ^= 0x10
		cases["flip at "+strconv.Itoa(off)] = b
	}
	for name, b := range cases {
		if y, _, err := Load(bytes.NewReader(b)); !errors.Is(err, ErrCorrupt) {
			if y != nil {
				y.Close()
			}
			t.Errorf("Load(%s) err = %v, want ErrCorrupt", name, err)
		}
	}
	// And the good one still loads.
	y, _, err := Load(bytes.NewReader(good))
	if err != nil {
		t.Fatalf("Load(good) = %v", err)
	}
	y.Close()
}

// A failed save leaves the previous file whole.
func TestWriteFileKeepsOldFileOnFailure(t *testing.T) {
	base := testSet(50, 1)
	x := newTestIndex(t, base)
	dir := t.TempDir()
	path := filepath.Join(dir, "a.vidx")
	if err := x.WriteFile(path, Meta{Watermark: 1}); err != nil {
		t.Fatal(err)
	}
	if err := x.WriteFile(path, Meta{Label: make([]byte, maxLabelLen+1)}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("WriteFile(huge label) err = %v, want ErrInvalid", err)
	}
	y, meta, err := ReadFile(path)
	if err != nil || meta.Watermark != 1 {
		t.Fatalf("ReadFile after failed save = %v, watermark %d; want the old file", err, meta.Watermark)
	}
	y.Close()
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
}

// A file older than the records is brought in line by Reconcile: keys
// written since are added, deleted since are removed, rewritten since are
// replaced, and the rest is left alone (their vectors never decoded).
func TestReconcileAfterLoad(t *testing.T) {
	base := testSet(1000, 1)
	x := newTestIndex(t, base)
	var buf bytes.Buffer
	if err := x.Save(&buf, Meta{}); err != nil {
		t.Fatal(err)
	}
	// The records move on: 0..99 deleted, 100..199 rewritten at 2, 1000..1049 new.
	type rec struct {
		version uint64
		vec     []float32
	}
	records := map[string]rec{}
	for i := 100; i < 1000; i++ {
		records[keyOf(i)] = rec{1, base.Row(i)}
	}
	for i := 100; i < 200; i++ {
		records[keyOf(i)] = rec{2, base.Row(i - 100)}
	}
	extra := testSet(50, 3)
	for i := range 50 {
		records[keyOf(1000+i)] = rec{1, extra.Row(i)}
	}
	y, _, err := Load(&buf)
	if err != nil {
		t.Fatal(err)
	}
	defer y.Close()
	decoded := 0
	added, removed, err := y.Reconcile(func(visit func(string, uint64, func() ([]float32, error)) error) error {
		for k, r := range records {
			if err := visit(k, r.version, func() ([]float32, error) { decoded++; return r.vec, nil }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || added != 150 || removed != 100 || decoded != 150 {
		t.Fatalf("Reconcile = %d added, %d removed, %v (%d decoded); want 150, 100, nil (150)", added, removed, err, decoded)
	}
	y.SetReady(true)
	if y.Len() != len(records) {
		t.Errorf("Len after Reconcile = %d, want %d", y.Len(), len(records))
	}
	for k, r := range records {
		if v, live, _ := y.Version(k); v != r.version || !live {
			t.Fatalf("Version(%s) = %d, %v; want %d, true", k, v, live, r.version)
		}
	}
	for i := 0; i < 100; i++ {
		res := search(t, y, Query{Vector: base.Row(i), K: 3})
		for _, h := range res.Hits {
			if h.Key == keyOf(i) {
				t.Fatalf("Search found %s, deleted since the file was saved", h.Key)
			}
		}
	}
	res := search(t, y, Query{Vector: extra.Row(7), K: 1})
	if len(res.Hits) != 1 || res.Hits[0].Key != keyOf(1007) {
		t.Errorf("Search(new vector) = %v, want %s", res.Hits, keyOf(1007))
	}
	// A failing decode stops it with the error.
	boom := errors.New("boom")
	_, _, err = y.Reconcile(func(visit func(string, uint64, func() ([]float32, error)) error) error {
		return visit("fresh", 1, func() ([]float32, error) { return nil, boom })
	})
	if !errors.Is(err, boom) {
		t.Errorf("Reconcile with a failing decode err = %v, want boom", err)
	}
}
