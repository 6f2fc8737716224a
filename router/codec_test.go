package router

import (
	"fmt"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/router/schema"
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
	got := mergePages(pages, []byte("e"))
	var keys []string
	for _, r := range got {
		keys = append(keys, fmt.Sprintf("%s@%d", r.Key, r.Version))
	}
	if want := "[a@3 b@1 d@2 e@1]"; fmt.Sprint(keys) != want {
		t.Errorf("mergePages = %v, want %s", keys, want)
	}
}

func TestValidToken(t *testing.T) {
	for s, want := range map[string]bool{
		"a": true, "my-topic": true, "A.b_c-9": true, "-a": false, ".a": false, "a/b": false, "a b": false,
		"": false, strings.Repeat("x", 128): true, strings.Repeat("x", 129): false, "a:b": false, "é": false,
	} {
		if got := schema.ValidName(s); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", s, got, want)
		}
	}
	for s, want := range map[string]bool{"a:b": true, ":a": false, strings.Repeat("x", 256): true, strings.Repeat("x", 257): false} {
		if got := schema.ValidID(s); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", s, got, want)
		}
	}
}
