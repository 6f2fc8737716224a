package coord

import (
	"fmt"
	"testing"

	"github.com/go-kvdb/go-kvdb/storage"
)

func TestMergePages(t *testing.T) {
	rec := func(k string, v uint64, tomb bool) storage.Record {
		return storage.Record{Key: []byte(k), Version: v, Tombstone: tomb}
	}
	pages := []storage.ScanPage{
		{Records: []storage.Record{rec("a", 1, false), rec("c", 5, false), rec("e", 1, false)}, More: true},
		{Records: []storage.Record{rec("b", 1, false), rec("c", 7, true), rec("d", 2, false), rec("f", 1, false)}},
		{Records: []storage.Record{rec("a", 3, false)}},
	}
	got := MergePages(pages, []byte("e"))
	var keys []string
	for _, r := range got {
		keys = append(keys, fmt.Sprintf("%s@%d", r.Key, r.Version))
	}
	if want := "[a@3 b@1 d@2 e@1]"; fmt.Sprint(keys) != want {
		t.Errorf("mergePages = %v, want %s", keys, want)
	}
}

func BenchmarkMergePages(b *testing.B) {
	pages := make([]storage.ScanPage, 3)
	for s := range pages {
		for i := range 100 {
			pages[s].Records = append(pages[s].Records, storage.Record{Key: fmt.Appendf(nil, "t\x00c%05d", i*3+s), Version: 1})
		}
		pages[s].More = true
	}
	b.ReportAllocs()
	for b.Loop() {
		MergePages(pages, []byte("t\x00c00297"))
	}
}

func TestMergeMatchesExactAndNewest(t *testing.T) {
	m := func(k string, v uint64, s float64) storage.Match {
		return storage.Match{Key: []byte(k), Version: v, Score: s}
	}
	res := MergeMatches([]storage.TopKResult{
		{Matches: []storage.Match{m("a", 1, 0.9), m("b", 1, 0.5)}, Scanned: 10, OtherDim: 2},
		{Matches: []storage.Match{m("a", 2, 0.7), m("c", 1, 0.6)}, Scanned: 5, OtherDim: 1, Exact: true},
		{Matches: []storage.Match{m("d", 1, 0.1)}},
	}, 3)
	var got []string
	for _, x := range res.Matches {
		got = append(got, fmt.Sprintf("%s@%d", x.Key, x.Version))
	}
	if fmt.Sprint(got) != "[a@2 c@1 b@1]" || !res.Exact || res.Scanned != 15 || res.OtherDim != 2 {
		t.Errorf("MergeMatches = %v, exact %v, scanned %d, other dim %d; want [a@2 c@1 b@1], exact, 15, 2", got, res.Exact, res.Scanned, res.OtherDim)
	}
}
