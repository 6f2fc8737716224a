package vindex

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func newTestRegistry(t testing.TB) *Registry {
	t.Helper()
	r, err := NewRegistry(Config{Seed: 1})
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// Put routes by (prefix, model, dimension); a rewrite under another model
// leaves the old model's index; Delete and Remove reach every index of
// the prefix, and no other prefix.
func TestRegistryRoutesWrites(t *testing.T) {
	r := newTestRegistry(t)
	vs := testSet(4, 1)
	small := []float32{1, 2, 3}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.Put("t1/", "m1", "t1/a", 1, vs.Row(0)))
	must(r.Put("t1/", "m1", "t1/b", 1, vs.Row(1)))
	must(r.Put("t1/", "m2", "t1/c", 1, vs.Row(2)))
	must(r.Put("t1/", "m1", "t1/d", 1, small))
	must(r.Put("t2/", "m1", "t2/a", 1, vs.Row(0)))
	m1 := r.Get(Key{"t1/", "m1", testDim})
	m2 := r.Get(Key{"t1/", "m2", testDim})
	m1small := r.Get(Key{"t1/", "m1", 3})
	t2 := r.Get(Key{"t2/", "m1", testDim})
	if m1 == nil || m2 == nil || m1small == nil || t2 == nil {
		t.Fatalf("Get after Put: %v %v %v %v, want four indexes", m1, m2, m1small, t2)
	}
	if m1.Len() != 2 || m2.Len() != 1 || m1small.Len() != 1 {
		t.Fatalf("Len = %d, %d, %d; want 2, 1, 1", m1.Len(), m2.Len(), m1small.Len())
	}
	// Rewrite a under m2: gone from m1.
	must(r.Put("t1/", "m2", "t1/a", 2, vs.Row(3)))
	if _, live, _ := m1.Version("t1/a"); live {
		t.Error("t1/a still live in m1 after its rewrite under m2")
	}
	if v, live, _ := m2.Version("t1/a"); v != 2 || !live {
		t.Errorf("m2.Version(t1/a) = %d, %v; want 2, true", v, live)
	}
	for _, h := range search(t, m1, Query{Vector: vs.Row(0), K: 5}).Hits {
		if h.Key == "t1/a" {
			t.Errorf("m1 search returned t1/a after its rewrite under m2")
		}
	}
	// Delete reaches every index of t1/ that knows the key, not t2/.
	must(r.Delete("t1/", "t1/a", 3))
	if _, live, _ := m2.Version("t1/a"); live {
		t.Error("t1/a live in m2 after Delete")
	}
	if _, _, known := m1small.Version("t1/a"); known {
		t.Error("Delete left a tombstone in an index that never held the key")
	}
	must(r.Delete("t2/", "t1/b", 9)) // another prefix: no effect on t1/
	if _, live, _ := m1.Version("t1/b"); !live {
		t.Error("Delete under t2/ reached t1/b")
	}
	must(r.Remove("t1/", "t1/b"))
	if _, _, known := m1.Version("t1/b"); known {
		t.Error("t1/b known after Remove")
	}
	if err := r.Put("t1/", "m1", "t1/e", 1, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Put(empty vector) err = %v, want ErrInvalid", err)
	}
	if err := r.Put("t3/", "m1", "t3/a", 1, []float32{1, float32(math.NaN())}); !errors.Is(err, ErrInvalid) || r.Get(Key{"t3/", "m1", 2}) != nil {
		t.Errorf("Put(NaN) err = %v, index %v; want ErrInvalid and no index made", err, r.Get(Key{"t3/", "m1", 2}))
	}

	st := r.Stats()
	if len(st) != 4 || st[0].Key != (Key{"t1/", "m1", 3}) || st[1].Key != (Key{"t1/", "m1", testDim}) {
		t.Fatalf("Stats keys = %v, want ordered by prefix, model, dim", st)
	}
	for _, s := range st {
		if s.Bytes < int64(s.Vectors*s.Dim*4) || !s.Ready || s.Building {
			t.Errorf("Stats(%s) = %+v: bytes below the vectors' own, or not ready", s.Key, s.Stats)
		}
	}
	if !r.Drop(Key{"t1/", "m2", testDim}) || r.Get(Key{"t1/", "m2", testDim}) != nil {
		t.Error("Drop did not remove the index")
	}
	if _, err := m2.Add("x", 1, vs.Row(0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Add on a dropped index err = %v, want ErrClosed", err)
	}
}

// SaveDir then LoadDir into a new registry brings back every index under
// its key, not ready until the owner says so; a damaged file is refused,
// removed and reported; files of dropped indexes are removed on save.
func TestRegistrySaveLoadDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vindex")
	r := newTestRegistry(t)
	base, queries := testSet(800, 1), testSet(10, 2)
	for i := range base.Len() {
		model := []string{"m1", "m2"}[i%2]
		if err := r.Put("topic\x00", model, keyOf(i), 1, base.Row(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Put("gone/", "m1", "gone/a", 1, base.Row(0)); err != nil {
		t.Fatal(err)
	}
	if err := r.SaveDir(dir, 42); err != nil {
		t.Fatalf("SaveDir: %v", err)
	}
	r.Drop(Key{"gone/", "m1", testDim})
	if err := r.SaveDir(dir, 43); err != nil {
		t.Fatalf("SaveDir: %v", err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "*"+fileExt))
	if len(names) != 2 {
		t.Fatalf("files after second SaveDir = %v, want 2", names)
	}

	r2 := newTestRegistry(t)
	loaded, err := r2.LoadDir(dir)
	if err != nil || len(loaded) != 2 {
		t.Fatalf("LoadDir = %v, %v; want 2 loaded", loaded, err)
	}
	for _, l := range loaded {
		if l.Err != nil || l.Watermark != 43 || l.Key.Prefix != "topic\x00" || l.Key.Dim != testDim {
			t.Fatalf("LoadDir entry = %+v, want key topic\\x00/m?/%d at watermark 43", l, testDim)
		}
		if r2.Get(l.Key) != l.Index || l.Index.Stats().Ready {
			t.Fatalf("loaded %s: not registered, or ready before reconcile", l.Key)
		}
		l.Index.SetReady(true)
		orig := r.Get(l.Key)
		for q := range queries.Len() {
			a := search(t, orig, Query{Vector: queries.Row(q), K: 5})
			b := search(t, l.Index, Query{Vector: queries.Row(q), K: 5})
			if len(a.Hits) != 5 || len(b.Hits) != 5 || a.Hits[0] != b.Hits[0] || a.Hits[4] != b.Hits[4] {
				t.Fatalf("loaded %s answers %v, original %v", l.Key, b.Hits, a.Hits)
			}
		}
	}

	// Damage one file: LoadDir refuses and removes it, loads the other.
	data, _ := os.ReadFile(names[0])
	os.WriteFile(names[0], data[:len(data)-100], 0o644)
	r3 := newTestRegistry(t)
	loaded, err = r3.LoadDir(dir)
	if err != nil || len(loaded) != 2 {
		t.Fatalf("LoadDir = %v, %v", loaded, err)
	}
	var refused, ok int
	for _, l := range loaded {
		switch {
		case errors.Is(l.Err, ErrCorrupt) && l.Index == nil:
			refused++
			if _, err := os.Stat(l.Path); !os.IsNotExist(err) {
				t.Errorf("refused file %s still there", l.Path)
			}
		case l.Err == nil && l.Index != nil:
			ok++
		}
	}
	if refused != 1 || ok != 1 || len(r3.Stats()) != 1 {
		t.Errorf("LoadDir of one damaged file: %d refused, %d loaded, %d registered; want 1, 1, 1", refused, ok, len(r3.Stats()))
	}
	// A missing directory is an empty one.
	if l, err := newTestRegistry(t).LoadDir(filepath.Join(dir, "none")); err != nil || len(l) != 0 {
		t.Errorf("LoadDir(missing) = %v, %v; want nothing", l, err)
	}
}
