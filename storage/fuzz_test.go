package storage

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// More fuzz targets for the bytes a shard reads from its file or its peer
// (FuzzParseWrites and FuzzParseScanPage are in wire_test.go). Seeds are
// in testdata/fuzz/<target>/ besides the f.Add ones; CI runs each briefly.

// FuzzParseStored: a stored value of any bytes splits or is refused, and
// what splits re-encodes to itself.
func FuzzParseStored(f *testing.F) {
	f.Add(appendStored(nil, 7, false, []byte("value")))
	f.Add(appendStored(nil, 1<<60, true, nil))
	f.Add([]byte{1, 2, 3})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, tomb, val, err := parseStored(b)
		if err != nil {
			if len(b) >= headerSize {
				t.Fatalf("parseStored(%x) = %v, want a split", b, err)
			}
			return
		}
		flags := byte(0)
		if tomb {
			flags = flagTombstone
		}
		if again := appendStored(nil, v, tomb, val); !bytes.Equal(again[:8], b[:8]) || again[8] != flags || !bytes.Equal(again[9:], b[9:]) {
			t.Fatalf("appendStored(parseStored(%x)) = %x", b, again)
		}
	})
}

// FuzzDecodeVector: any stored vector decodes or is ErrInvalid, and what
// decodes re-encodes to a vector that decodes the same.
func FuzzDecodeVector(f *testing.F) {
	f.Add(EncodeVector(Vector{Model: "m", Tags: []string{"a", "b"}, Values: []float32{1, 2, 3}}))
	f.Add(EncodeVector(Vector{}))
	f.Add([]byte{vectorFormatV1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{vectorFormatV1, 0, 0, 0x80, 0x80, 0x04})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeVector(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("DecodeVector(%x) = %v, want ErrInvalid", b, err)
			}
			return
		}
		v2, err := DecodeVector(EncodeVector(v))
		if err != nil || v2.Model != v.Model || !slices.Equal(v2.Tags, v.Tags) || len(v2.Values) != len(v.Values) {
			t.Fatalf("DecodeVector(EncodeVector(DecodeVector(%x))) = %+v, %v", b, v2, err)
		}
		// A ranker fed the vector never panics either.
		if rk, err := NewRanker(TopKQuery{Query: []float32{1, 0, 0}, K: 1, Model: v.Model, Tags: v.Tags}); err == nil {
			rk.Add([]byte("k"), 1, b)
			rk.Result()
		}
	})
}

// FuzzParseKeys: a MultiGet body parses into keys that re-encode to it.
func FuzzParseKeys(f *testing.F) {
	f.Add(appendKeys(nil, [][]byte{[]byte("a"), []byte("b\x00c")}))
	f.Add([]byte{0x80, 0x80, 0x80, 0x80, 0x10})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := parseKeys(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("parseKeys(%x) = %v, want ErrInvalid", b, err)
			}
			return
		}
		keys2, err := parseKeys(appendKeys(nil, keys))
		if err != nil || len(keys2) != len(keys) {
			t.Fatalf("parseKeys round trip of %x = %d keys, %v; want %d", b, len(keys2), err, len(keys))
		}
	})
}

// FuzzParseTopK: a TopK request or answer parses or is ErrInvalid.
func FuzzParseTopK(f *testing.F) {
	f.Add(appendTopKQuery(nil, &TopKQuery{Prefix: []byte("t\x00"), Query: []float32{1, 2}, K: 3, Model: "m", Tags: []string{"x"}}))
	f.Add(appendTopKResult(nil, &TopKResult{Matches: []Match{{Key: []byte("k"), Version: 2, Score: 0.5}}, Scanned: 4, OtherDim: 1}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		if q, err := parseTopKQuery(b); err == nil {
			if _, err := parseTopKQuery(appendTopKQuery(nil, &q)); err != nil {
				t.Fatalf("parseTopKQuery round trip of %x: %v", b, err)
			}
		} else if !errors.Is(err, ErrInvalid) {
			t.Fatalf("parseTopKQuery(%x) = %v, want ErrInvalid", b, err)
		}
		if res, err := parseTopKResult(b); err == nil {
			if _, err := parseTopKResult(appendTopKResult(nil, &res)); err != nil {
				t.Fatalf("parseTopKResult round trip of %x: %v", b, err)
			}
		} else if !errors.Is(err, ErrInvalid) {
			t.Fatalf("parseTopKResult(%x) = %v, want ErrInvalid", b, err)
		}
	})
}

// FuzzParseKeywordQuery: any keyword query body parses or is ErrInvalid,
// and what parses re-encodes to the same query; a text value of any bytes
// decodes or is ErrInvalid, and scoring it never panics.
func FuzzParseKeywordQuery(f *testing.F) {
	f.Add(appendKeywordQuery(nil, &KeywordQuery{Prefix: []byte("t\x00"), Terms: []string{"fox", "dog"}, K: 10, Tags: []string{"a"}, Stats: KeywordStats{Docs: 9, Length: 80, DF: []int64{2, 3}}}))
	f.Add(EncodeText(Text{Tags: []string{"a"}, Body: "Foxes run"}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := parseKeywordQuery(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("parseKeywordQuery(%x) = %v, want ErrInvalid", b, err)
			}
		} else if again := appendKeywordQuery(nil, &q); !bytes.Equal(again, b) {
			q2, err := parseKeywordQuery(again)
			if err != nil || fmt.Sprint(q2) != fmt.Sprint(q) {
				t.Fatalf("parseKeywordQuery(appendKeywordQuery(%+v)) = %+v, %v", q, q2, err)
			}
		}
		if _, err := DecodeText(b); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("DecodeText(%x) = %v, want ErrInvalid", b, err)
		}
		ScoreText(&KeywordQuery{Terms: []string{"fox"}, Stats: KeywordStats{Docs: 3, Length: 9, DF: []int64{1}}}, b)
		var st KeywordStats
		AddTextStats(&st, []string{"fox"}, b)
	})
}
