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
