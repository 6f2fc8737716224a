package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

type topKShard interface {
	shard
	TopK(ctx context.Context, bucket string, q TopKQuery) (TopKResult, error)
}

var (
	_ topKShard = (*Store)(nil)
	_ topKShard = (*Client)(nil)
)

func eachTopKShard(t *testing.T, fn func(t *testing.T, sh topKShard)) {
	eachShard(t, func(t *testing.T, sh shard) { fn(t, sh.(topKShard)) })
}

func TestVectorRoundTrip(t *testing.T) {
	tests := []Vector{
		{Model: "nomic-embed-text", Tags: []string{"a", "b"}, Values: []float32{0.1, -2, 3.5e-8}},
		{Values: []float32{1}},
		{Model: "m", Values: []float32{0, 0, 0}},
	}
	for _, v := range tests {
		got, err := DecodeVector(EncodeVector(v))
		if err != nil {
			t.Fatalf("DecodeVector(EncodeVector(%+v)) = %v", v, err)
		}
		if got.Model != v.Model || !slices.Equal(got.Tags, v.Tags) || !slices.Equal(got.Values, v.Values) {
			t.Errorf("DecodeVector(EncodeVector(%+v)) = %+v", v, got)
		}
	}
	b := EncodeVector(tests[0])
	for n := range len(b) {
		if _, err := DecodeVector(b[:n]); !errors.Is(err, ErrInvalid) {
			t.Errorf("DecodeVector(first %d of %d bytes) = %v, want ErrInvalid", n, len(b), err)
		}
	}
}

func putVector(key string, version uint64, v Vector) Write {
	return Write{Record: Record{Key: []byte(key), Version: version, Value: EncodeVector(v)}}
}

func cosine(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	return dot / math.Sqrt(na*nb)
}

func TestTopK(t *testing.T) {
	eachTopKShard(t, func(t *testing.T, sh topKShard) {
		ctx := context.Background()
		rng := rand.New(rand.NewPCG(1, 2))
		type item struct {
			key  string
			vec  []float32
			tags []string
		}
		var items []item
		var writes []Write
		for i := range 200 {
			v := make([]float32, 8)
			for j := range v {
				v[j] = rng.Float32()*2 - 1
			}
			tags := []string{"all"}
			if i%2 == 0 {
				tags = append(tags, "even")
			}
			it := item{key: fmt.Sprintf("t\x00c%03d", i), vec: v, tags: tags}
			items = append(items, it)
			writes = append(writes, putVector(it.key, uint64(100+i), Vector{Model: "m", Tags: tags, Values: v}))
		}
		// Noise that must never match: another model, another dimension,
		// another prefix, a tombstone, a zero vector.
		writes = append(writes,
			putVector("t\x00other-model", 1, Vector{Model: "n", Values: make([]float32, 8)}),
			putVector("t\x00other-dim", 1, Vector{Model: "m", Tags: []string{"all"}, Values: []float32{1, 2, 3}}),
			putVector("u\x00other-topic", 1, Vector{Model: "m", Values: []float32{1, 1, 1, 1, 1, 1, 1, 1}}),
			putVector("t\x00zero", 1, Vector{Model: "m", Values: make([]float32, 8)}),
			putVector("t\x00deleted", 1, Vector{Model: "m", Values: []float32{1, 1, 1, 1, 1, 1, 1, 1}}),
		)
		mustApply(t, sh, "vectors", writes...)
		mustApply(t, sh, "vectors", del("t\x00deleted", 2))

		query := []float32{0.3, -0.2, 0.9, 0, 0.1, 0.5, -0.7, 0.2}
		for _, tc := range []struct {
			name string
			k    int
			tags []string
		}{
			{"k=1", 1, nil},
			{"k=10", 10, nil},
			{"k beyond count", 500, nil},
			{"tag even", 7, []string{"even"}},
			{"two tags", 5, []string{"even", "all"}},
			{"unknown tag", 5, []string{"nope"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var want []Match
				for i, it := range items {
					if hasTags(bytesOf(it.tags), tc.tags) {
						want = append(want, Match{Key: []byte(it.key), Version: uint64(100 + i), Score: cosine(query, it.vec)})
					}
				}
				SortMatches(want)
				want = want[:min(tc.k, len(want))]
				res, err := sh.TopK(ctx, "vectors", TopKQuery{Prefix: []byte("t\x00"), Query: query, K: tc.k, Model: "m", Tags: tc.tags, Exact: true})
				if err != nil {
					t.Fatalf("TopK = %v, want nil", err)
				}
				if len(res.Matches) != len(want) {
					t.Fatalf("TopK returned %d matches, want %d", len(res.Matches), len(want))
				}
				for i := range want {
					g, w := res.Matches[i], want[i]
					if string(g.Key) != string(w.Key) || g.Version != w.Version || math.Abs(g.Score-w.Score) > 1e-6 {
						t.Errorf("match %d = {%q v%d %.6f}, want {%q v%d %.6f}", i, g.Key, g.Version, g.Score, w.Key, w.Version, w.Score)
					}
				}
				// Live under the prefix: the items, other-model, other-dim
				// and zero; not the tombstone, not the other topic.
				if res.Scanned != 203 {
					t.Errorf("Scanned = %d, want 203", res.Scanned)
				}
				wantOther := 0
				if hasTags([][]byte{[]byte("all")}, tc.tags) {
					wantOther = 1
				}
				if res.OtherDim != wantOther {
					t.Errorf("OtherDim = %d, want %d", res.OtherDim, wantOther)
				}
			})
		}

		res, err := sh.TopK(ctx, "vectors", TopKQuery{Prefix: []byte("t\x00"), Query: []float32{1, 0, 0}, K: 3, Model: "m", Exact: true})
		if err != nil || len(res.Matches) != 1 || string(res.Matches[0].Key) != "t\x00other-dim" || res.OtherDim != 201 {
			t.Errorf("TopK(3 dimensions) = %+v, %v; want only t\\x00other-dim and OtherDim 201 (the items and zero)", res, err)
		}
		res, err = sh.TopK(ctx, "nothing_here", TopKQuery{Query: query, K: 3})
		if err != nil || len(res.Matches) != 0 {
			t.Errorf("TopK(missing bucket) = %+v, %v; want no matches", res, err)
		}
	})
}

func bytesOf(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

func TestTopKInvalid(t *testing.T) {
	eachTopKShard(t, func(t *testing.T, sh topKShard) {
		for _, q := range []TopKQuery{
			{Query: []float32{1}, K: 0},
			{Query: []float32{1}, K: MaxTopK + 1},
			{Query: nil, K: 1},
		} {
			if _, err := sh.TopK(context.Background(), "vectors", q); !errors.Is(err, ErrInvalid) {
				t.Errorf("TopK(k=%d, dim=%d) = %v, want ErrInvalid", q.K, len(q.Query), err)
			}
		}
		if _, err := sh.TopK(context.Background(), "Bad/Bucket", TopKQuery{Query: []float32{1}, K: 1}); !errors.Is(err, ErrInvalid) {
			t.Errorf("TopK(bad bucket) = %v, want ErrInvalid", err)
		}
		// A record that is not a vector is a corrupt bucket, not a match.
		mustApply(t, sh, "vectors", put("k", 1, "not a vector"))
		if _, err := sh.TopK(context.Background(), "vectors", TopKQuery{Query: []float32{1}, K: 1}); err == nil {
			t.Errorf("TopK over a non-vector record = nil error, want one")
		}
	})
}

func TestTopKWire(t *testing.T) {
	q := TopKQuery{Prefix: []byte("p\x00"), Query: []float32{1, -1, 0.5}, K: 7, Model: "m", Tags: []string{"x", "y"}}
	got, err := parseTopKQuery(appendTopKQuery(nil, &q))
	if err != nil || string(got.Prefix) != string(q.Prefix) || !slices.Equal(got.Query, q.Query) || got.K != q.K || got.Model != q.Model || !slices.Equal(got.Tags, q.Tags) {
		t.Errorf("parseTopKQuery(appendTopKQuery(%+v)) = %+v, %v", q, got, err)
	}
	b := appendTopKQuery(nil, &q)
	for n := range len(b) - 1 {
		if _, err := parseTopKQuery(b[:n]); !errors.Is(err, ErrInvalid) {
			t.Errorf("parseTopKQuery(first %d of %d bytes) = %v, want ErrInvalid", n, len(b), err)
		}
	}
	res := TopKResult{Scanned: 9, OtherDim: 2, Matches: []Match{{Key: []byte("a"), Version: 5, Score: 0.5}, {Key: []byte("b"), Version: 6, Score: -0.25}}}
	gr, err := parseTopKResult(appendTopKResult(nil, &res))
	if err != nil || gr.Scanned != 9 || gr.OtherDim != 2 || len(gr.Matches) != 2 || gr.Matches[1].Score != -0.25 || string(gr.Matches[0].Key) != "a" {
		t.Errorf("parseTopKResult(appendTopKResult(%+v)) = %+v, %v", res, gr, err)
	}
}

func TestDotLE(t *testing.T) {
	for _, n := range []int{0, 1, 3, 4, 5, 8, 768, 769} {
		q := make([]float32, n)
		b := make([]byte, 0, 4*n)
		var want float64
		for i := range q {
			q[i] = float32(i%7) - 3.5
			v := float32(i%5) * 0.25
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
			want += float64(q[i]) * float64(v)
		}
		if got := dotLE(q, b); math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
			t.Errorf("dotLE(n=%d) = %v, want %v", n, got, want)
		}
	}
}

func BenchmarkDotLE768(b *testing.B) {
	q := make([]float32, 768)
	v := make([]byte, 4*768)
	for i := range q {
		q[i] = float32(i) / 768
		binary.LittleEndian.PutUint32(v[4*i:], math.Float32bits(float32(768-i)/768))
	}
	for b.Loop() {
		dotLE(q, v)
	}
}
