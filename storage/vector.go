package storage

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Vectors are how a shard answers "which records are most like this one"
// without the router reading every record: the router stores one embedding
// per record in a bucket of its choosing, in the format below, and TopK
// scans a key prefix of that bucket and returns the k best cosine scores.
// The shard knows nothing else about what the vectors mean.
//
// A vector value is
//
//	format (1) | uvarint len model | model
//	           | uvarint n tags | (uvarint len tag | tag)*
//	           | uvarint dim | norm float32 LE | dim × float32 LE
//
// The norm is stored so a scan computes one dot product per record.
const (
	vectorFormatV1 = 1

	// MaxVectorDim bounds a vector's dimension.
	MaxVectorDim = 1 << 16
	// MaxTopK bounds k in one TopK call.
	MaxTopK = 10000

	pathTopK = "/v1/topk/"
)

// Vector is an embedding with what a search filters it by.
type Vector struct {
	Model  string    // the embedding model; searches compare only equal models
	Tags   []string  // a search's tags must all be among them
	Values []float32 // the embedding
}

// EncodeVector renders v in the stored vector format.
func EncodeVector(v Vector) []byte {
	n := 1 + 3*binary.MaxVarintLen64 + len(v.Model) + 4 + 4*len(v.Values)
	for _, t := range v.Tags {
		n += binary.MaxVarintLen64 + len(t)
	}
	out := make([]byte, 0, n)
	out = append(out, vectorFormatV1)
	out = binary.AppendUvarint(out, uint64(len(v.Model)))
	out = append(out, v.Model...)
	out = binary.AppendUvarint(out, uint64(len(v.Tags)))
	for _, t := range v.Tags {
		out = binary.AppendUvarint(out, uint64(len(t)))
		out = append(out, t...)
	}
	out = binary.AppendUvarint(out, uint64(len(v.Values)))
	out = binary.LittleEndian.AppendUint32(out, math.Float32bits(norm(v.Values)))
	for _, f := range v.Values {
		out = binary.LittleEndian.AppendUint32(out, math.Float32bits(f))
	}
	return out
}

// storedVector is a stored vector split into its parts; values aliases the
// stored bytes and is decoded only for records that pass the filters.
type storedVector struct {
	model  []byte
	tags   [][]byte
	dim    int
	norm   float32
	values []byte // dim × 4 bytes
}

func splitVector(b []byte) (storedVector, error) {
	var s storedVector
	r := wireReader{b: b}
	if r.byte("vector format") != vectorFormatV1 {
		return s, fmt.Errorf("unknown vector format: %w", ErrInvalid)
	}
	s.model = r.bytes("vector model", MaxKeySize)
	ntags, k := binary.Uvarint(r.b)
	if r.err == nil && (k <= 0 || ntags > uint64(len(r.b))) {
		r.fail("vector tags")
	}
	if r.err == nil {
		r.b = r.b[k:]
		s.tags = make([][]byte, 0, ntags)
		for range ntags {
			s.tags = append(s.tags, r.bytes("vector tag", MaxKeySize))
		}
	}
	if r.err != nil {
		return s, r.err
	}
	dim, k := binary.Uvarint(r.b)
	if k <= 0 || dim > MaxVectorDim || uint64(len(r.b)-k) != 4+4*dim {
		return s, fmt.Errorf("truncated or malformed vector values: %w", ErrInvalid)
	}
	s.dim = int(dim)
	s.norm = math.Float32frombits(binary.LittleEndian.Uint32(r.b[k:]))
	s.values = r.b[k+4:]
	return s, nil
}

// DecodeVector parses a stored vector.
func DecodeVector(b []byte) (Vector, error) {
	s, err := splitVector(b)
	if err != nil {
		return Vector{}, err
	}
	v := Vector{Model: string(s.model), Values: make([]float32, s.dim)}
	for _, t := range s.tags {
		v.Tags = append(v.Tags, string(t))
	}
	for i := range v.Values {
		v.Values[i] = math.Float32frombits(binary.LittleEndian.Uint32(s.values[4*i:]))
	}
	return v, nil
}

func norm(v []float32) float32 {
	var s float64
	for _, f := range v {
		s += float64(f) * float64(f)
	}
	return float32(math.Sqrt(s))
}

// TopKQuery asks for the K vectors under Prefix most similar to Query.
// Only vectors of the same Model and dimension that carry every one of Tags
// are compared; tombstones and zero vectors never match.
type TopKQuery struct {
	Prefix []byte
	Query  []float32
	K      int // 1..MaxTopK
	Model  string
	Tags   []string
	// Exact asks for the exact scan even where an index could answer.
	Exact bool
}

// Match is one vector found by TopK.
type Match struct {
	Key     []byte
	Version uint64  // the vector record's version
	Score   float64 // cosine similarity, -1..1
}

// TopKResult holds the matches, best first (ties by key), and counts of
// what the scan saw, so a caller can tell "nothing similar" from "nothing
// comparable".
type TopKResult struct {
	Matches []Match
	// Scanned is the number of live vectors under the prefix.
	Scanned int
	// OtherDim is the number of vectors of the query's model (and tags)
	// whose dimension differs from the query's: never compared. From the
	// index it counts them whatever their tags.
	OtherDim int
	// Exact says the matches come from a scan of every vector, not the
	// index: the query asked so, the index is not ready (the store's
	// start-up pass runs), the prefix is not one group, or a filter admitted
	// too few for a walk.
	Exact bool
}

func checkTopK(q *TopKQuery) error {
	switch {
	case q.K < 1 || q.K > MaxTopK:
		return fmt.Errorf("top k %d (want 1..%d): %w", q.K, MaxTopK, ErrInvalid)
	case len(q.Query) == 0 || len(q.Query) > MaxVectorDim:
		return fmt.Errorf("query of %d dimensions (want 1..%d): %w", len(q.Query), MaxVectorDim, ErrInvalid)
	case len(q.Prefix) > MaxKeySize:
		return fmt.Errorf("prefix of %d bytes exceeds %d: %w", len(q.Prefix), MaxKeySize, ErrInvalid)
	}
	return nil
}

// TopK returns the q.K live vectors under q.Prefix with the highest cosine
// similarity to q.Query: from the bucket's ANN index when it can answer
// (see vindex.go), else by a scan in one read transaction whose cost is
// one dot product per comparable vector under the prefix.
func (s *Store) TopK(ctx context.Context, bucket string, q TopKQuery) (TopKResult, error) {
	if err := checkBucket(bucket); err != nil {
		return TopKResult{}, err
	}
	rk, err := NewRanker(q)
	if err != nil {
		return TopKResult{}, err
	}
	if rk.qnorm == 0 {
		return TopKResult{}, nil
	}
	start := time.Now()
	if res, ok, err := s.annTopK(bucket, &q); ok || err != nil {
		if ok && s.searchObs != nil {
			s.searchObs(time.Since(start), false)
		}
		return res, err
	}
	rk.res.Exact = true
	if s.searchObs != nil {
		defer func() { s.searchObs(time.Since(start), true) }()
	}
	err = s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, raw := c.Seek(q.Prefix); k != nil && bytes.HasPrefix(k, q.Prefix); k, raw = c.Next() {
			if rk.res.Scanned%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			version, tomb, val, err := parseStored(raw)
			if err != nil {
				return fmt.Errorf("key %q: %w", k, err)
			}
			if tomb {
				continue
			}
			if err := rk.Add(k, version, val); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return TopKResult{}, err
	}
	return rk.Result(), nil
}

// Ranker keeps the k best matches of a query among live vectors fed to it
// one at a time. Store.TopK feeds it from a scan inside the shard; a router
// that stores its vectors sealed (so the shard cannot read them) feeds it
// the vectors it fetched and opened, and ranks exactly as a shard would.
type Ranker struct {
	q     TopKQuery
	qnorm float64
	h     matchHeap
	res   TopKResult
}

// NewRanker checks q and returns an empty ranking for it.
func NewRanker(q TopKQuery) (*Ranker, error) {
	if err := checkTopK(&q); err != nil {
		return nil, err
	}
	return &Ranker{q: q, qnorm: float64(norm(q.Query)), h: make(matchHeap, 0, q.K)}, nil
}

// Add ranks one live vector record: its key, its version and its value in
// the EncodeVector format. The key is copied if kept.
func (r *Ranker) Add(key []byte, version uint64, value []byte) error {
	r.res.Scanned++
	sv, err := splitVector(value)
	if err != nil {
		return fmt.Errorf("key %q: %w", key, err)
	}
	if string(sv.model) != r.q.Model || !hasTags(sv.tags, r.q.Tags) {
		return nil
	}
	if sv.dim != len(r.q.Query) {
		r.res.OtherDim++
		return nil
	}
	if sv.norm == 0 || r.qnorm == 0 {
		return nil
	}
	m := Match{Version: version, Score: dotLE(r.q.Query, sv.values) / (r.qnorm * float64(sv.norm))}
	if len(r.h) < r.q.K {
		m.Key = bytes.Clone(key)
		heap.Push(&r.h, m)
	} else if better(m, key, r.h[0]) {
		m.Key = bytes.Clone(key)
		r.h[0] = m
		heap.Fix(&r.h, 0)
	}
	return nil
}

// Result returns the matches, best first, and the counts.
func (r *Ranker) Result() TopKResult {
	res := r.res
	res.Matches = slices.Clone([]Match(r.h))
	SortMatches(res.Matches)
	return res
}

func hasTags(have [][]byte, want []string) bool {
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h []byte) bool { return string(h) == w }) {
			return false
		}
	}
	return true
}

// better reports whether a (with key ak) ranks above b: higher score, then
// smaller key, so results are deterministic.
func better(a Match, ak []byte, b Match) bool {
	if a.Score != b.Score {
		return a.Score > b.Score
	}
	return bytes.Compare(ak, b.Key) < 0
}

// SortMatches orders matches best first: by score, then by key.
func SortMatches(ms []Match) {
	slices.SortFunc(ms, func(a, b Match) int {
		switch {
		case a.Score > b.Score:
			return -1
		case a.Score < b.Score:
			return 1
		}
		return bytes.Compare(a.Key, b.Key)
	})
}

// matchHeap is a min-heap of matches: its root is the worst kept so far.
type matchHeap []Match

func (h matchHeap) Len() int           { return len(h) }
func (h matchHeap) Less(i, j int) bool { return better(h[j], h[j].Key, h[i]) }
func (h matchHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *matchHeap) Push(x any)        { *h = append(*h, x.(Match)) }
func (h *matchHeap) Pop() any {
	old := *h
	m := old[len(old)-1]
	*h = old[:len(old)-1]
	return m
}

// On the wire a TopK request and its answer are
//
//	request  = k (uvarint) | uvarint len prefix | prefix | uvarint len model | model
//	         | uvarint n tags | (uvarint len tag | tag)* | flags (uvarint) | uvarint dim | dim × float32 LE
//	response = scanned (uvarint) | other dim (uvarint) | flags (uvarint)
//	         | (uvarint len key | key | version (8) | score float64 LE)*
//
// where flags bit 0 is Exact.

func appendTopKQuery(dst []byte, q *TopKQuery) []byte {
	dst = binary.AppendUvarint(dst, uint64(q.K))
	dst = binary.AppendUvarint(dst, uint64(len(q.Prefix)))
	dst = append(dst, q.Prefix...)
	dst = binary.AppendUvarint(dst, uint64(len(q.Model)))
	dst = append(dst, q.Model...)
	dst = binary.AppendUvarint(dst, uint64(len(q.Tags)))
	for _, t := range q.Tags {
		dst = binary.AppendUvarint(dst, uint64(len(t)))
		dst = append(dst, t...)
	}
	dst = binary.AppendUvarint(dst, flagBit(q.Exact))
	dst = binary.AppendUvarint(dst, uint64(len(q.Query)))
	for _, f := range q.Query {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(f))
	}
	return dst
}

func (r *wireReader) uvarint(what string, max uint64) uint64 {
	if r.err != nil {
		return 0
	}
	n, k := binary.Uvarint(r.b)
	if k <= 0 || n > max {
		r.fail(what)
		return 0
	}
	r.b = r.b[k:]
	return n
}

func parseTopKQuery(b []byte) (TopKQuery, error) {
	r := wireReader{b: b}
	var q TopKQuery
	q.K = int(r.uvarint("top k", MaxTopK))
	q.Prefix = r.bytes("prefix", MaxKeySize)
	q.Model = string(r.bytes("model", MaxKeySize))
	ntags := r.uvarint("tags", uint64(len(r.b)))
	for range ntags {
		q.Tags = append(q.Tags, string(r.bytes("tag", MaxKeySize)))
	}
	q.Exact = r.uvarint("flags", 1) == 1
	dim := r.uvarint("query dimension", MaxVectorDim)
	if r.err == nil && uint64(len(r.b)) != 4*dim {
		r.fail("query values")
	}
	if r.err != nil {
		return q, r.err
	}
	q.Query = make([]float32, dim)
	for i := range q.Query {
		q.Query[i] = math.Float32frombits(binary.LittleEndian.Uint32(r.b[4*i:]))
	}
	return q, nil
}

func appendTopKResult(dst []byte, res *TopKResult) []byte {
	dst = binary.AppendUvarint(dst, uint64(res.Scanned))
	dst = binary.AppendUvarint(dst, uint64(res.OtherDim))
	dst = binary.AppendUvarint(dst, flagBit(res.Exact))
	for _, m := range res.Matches {
		dst = binary.AppendUvarint(dst, uint64(len(m.Key)))
		dst = append(dst, m.Key...)
		dst = binary.BigEndian.AppendUint64(dst, m.Version)
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(m.Score))
	}
	return dst
}

func parseTopKResult(b []byte) (TopKResult, error) {
	r := wireReader{b: b}
	var res TopKResult
	res.Scanned = int(r.uvarint("scanned", math.MaxInt32))
	res.OtherDim = int(r.uvarint("other dimension", math.MaxInt32))
	res.Exact = r.uvarint("flags", 1) == 1
	for len(r.b) > 0 && r.err == nil {
		var m Match
		m.Key = r.bytes("match key", MaxKeySize)
		m.Version = r.uint64("match version")
		if r.err == nil && len(r.b) < 8 {
			r.fail("match score")
		}
		if r.err == nil {
			m.Score = math.Float64frombits(binary.LittleEndian.Uint64(r.b))
			r.b = r.b[8:]
		}
		res.Matches = append(res.Matches, m)
	}
	return res, r.err
}

// topK serves POST /v1/topk/{bucket}.
func (h *handler) topK(w http.ResponseWriter, r *http.Request) {
	body := getBuf()
	defer putBuf(body)
	if _, err := body.ReadFrom(http.MaxBytesReader(w, r.Body, 4*MaxVectorDim+4*MaxKeySize+1<<20)); err != nil {
		h.fail(w, r, fmt.Errorf("read request: %v: %w", err, ErrInvalid))
		return
	}
	q, err := parseTopKQuery(body.Bytes())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.store.TopK(r.Context(), r.PathValue("bucket"), q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := getBuf()
	defer putBuf(out)
	out.Write(appendTopKResult(out.AvailableBuffer(), &res))
	writeBinary(w, out.Bytes())
}

// dotLE is the dot product of q with len(q) little-endian float32 values
// in b. Four accumulators break the chain of dependent additions, which
// otherwise bounds the loop at one addition per add latency.
func dotLE(q []float32, b []byte) float64 {
	b = b[:4*len(q)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(q); i += 4 {
		w := b[4*i : 4*i+16]
		s0 += float64(q[i]) * float64(math.Float32frombits(binary.LittleEndian.Uint32(w[0:])))
		s1 += float64(q[i+1]) * float64(math.Float32frombits(binary.LittleEndian.Uint32(w[4:])))
		s2 += float64(q[i+2]) * float64(math.Float32frombits(binary.LittleEndian.Uint32(w[8:])))
		s3 += float64(q[i+3]) * float64(math.Float32frombits(binary.LittleEndian.Uint32(w[12:])))
	}
	for ; i < len(q); i++ {
		s0 += float64(q[i]) * float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
	}
	return (s0 + s1) + (s2 + s3)
}

func flagBit(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
