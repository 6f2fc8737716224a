// Package vindextest makes the vectors that tests and benchmarks of vector
// search share: clustered unit vectors from a seed, the file format the
// hnswlib anchor script reads (so Go and Python measure the same vectors),
// and the exact top k by brute force that recall is measured against.
//
// It is for tests, benchmarks and kvdb-bench only; nothing in a server
// imports it.
package vindextest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
)

// Set is n vectors of Dim float32 values, row after row in Data.
type Set struct {
	Dim  int
	Data []float32
}

// Len is the number of vectors.
func (s *Set) Len() int {
	if s.Dim == 0 {
		return 0
	}
	return len(s.Data) / s.Dim
}

// Row returns vector i (aliasing Data).
func (s *Set) Row(i int) []float32 { return s.Data[i*s.Dim : (i+1)*s.Dim : (i+1)*s.Dim] }

// Clustered returns n unit vectors of dim dimensions drawn around clusters
// centres (themselves random unit vectors): each vector is its centre plus
// isotropic Gaussian noise of expected norm spread, normalised. Vector i
// belongs to cluster i mod clusters. With spread 1 a vector's cosine to its
// centre is about 0.7 and to another member of its cluster about 0.5, to
// anything else about 0: like text embeddings of a few topics. The same
// arguments always give the same vectors (PCG seeded with seed); queries
// drawn with another seed but the same centreSeed come from the same
// clusters.
func Clustered(centreSeed, seed uint64, n, dim, clusters int, spread float64) *Set {
	centres := make([]float32, clusters*dim)
	rc := rand.New(rand.NewPCG(centreSeed, 0x5eed))
	for c := range clusters {
		row := centres[c*dim : (c+1)*dim]
		for j := range row {
			row[j] = float32(rc.NormFloat64())
		}
		normalize(row)
	}
	s := &Set{Dim: dim, Data: make([]float32, n*dim)}
	r := rand.New(rand.NewPCG(seed, 0xc1a5))
	sigma := spread / math.Sqrt(float64(dim))
	for i := range n {
		row := s.Row(i)
		c := centres[(i%clusters)*dim:]
		for j := range row {
			row[j] = c[j] + float32(sigma*r.NormFloat64())
		}
		normalize(row)
	}
	return s
}

func normalize(v []float32) {
	var ss float64
	for _, f := range v {
		ss += float64(f) * float64(f)
	}
	if ss == 0 {
		return
	}
	inv := float32(1 / math.Sqrt(ss))
	for j := range v {
		v[j] *= inv
	}
}

// The file format is a 16-byte header, magic "KVDBVEC1" then n and dim as
// uint32 little endian, then n × dim float32 little endian: numpy reads it
// with fromfile(offset=16).
const fileMagic = "KVDBVEC1"

// WriteFile writes s to path in the file format.
func WriteFile(path string, s *Set) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create vector file: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	hdr := make([]byte, 16)
	copy(hdr, fileMagic)
	binary.LittleEndian.PutUint32(hdr[8:], uint32(s.Len()))
	binary.LittleEndian.PutUint32(hdr[12:], uint32(s.Dim))
	w.Write(hdr)
	if err := binary.Write(w, binary.LittleEndian, s.Data); err != nil {
		f.Close()
		return fmt.Errorf("write vector file %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write vector file %s: %w", path, err)
	}
	return f.Close()
}

// ReadFile reads a set written by WriteFile.
func ReadFile(path string) (*Set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open vector file: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	hdr := make([]byte, 16)
	if _, err := io.ReadFull(r, hdr); err != nil || string(hdr[:8]) != fileMagic {
		return nil, fmt.Errorf("vector file %s: not a vector file", path)
	}
	n, dim := binary.LittleEndian.Uint32(hdr[8:]), binary.LittleEndian.Uint32(hdr[12:])
	s := &Set{Dim: int(dim), Data: make([]float32, int(n)*int(dim))}
	if err := binary.Read(r, binary.LittleEndian, s.Data); err != nil {
		return nil, fmt.Errorf("vector file %s: %w", path, err)
	}
	return s, nil
}

// Exact returns, for each query, the indexes of the k base vectors with
// the highest dot product (the cosine, for unit vectors), best first, ties
// by index; keep reports whether a base vector may be returned (nil: all).
// It uses every core.
func Exact(base, queries *Set, k int, keep func(i int) bool) [][]int {
	out := make([][]int, queries.Len())
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for q := range next {
				out[q] = exactOne(base, queries.Row(q), k, keep)
			}
		}()
	}
	for q := range queries.Len() {
		next <- q
	}
	close(next)
	wg.Wait()
	return out
}

type scored struct {
	i int
	s float64
}

func exactOne(base *Set, q []float32, k int, keep func(int) bool) []int {
	best := make([]scored, 0, k+1)
	for i := range base.Len() {
		if keep != nil && !keep(i) {
			continue
		}
		row := base.Row(i)
		var s float64
		for j, f := range q {
			s += float64(f) * float64(row[j])
		}
		if len(best) == k && s <= best[k-1].s {
			continue
		}
		at, _ := slices.BinarySearchFunc(best, s, func(e scored, s float64) int {
			if e.s > s {
				return -1
			}
			return 1
		})
		best = slices.Insert(best, at, scored{i, s})
		if len(best) > k {
			best = best[:k]
		}
	}
	ids := make([]int, len(best))
	for j, b := range best {
		ids[j] = b.i
	}
	return ids
}

// Recall is the fraction of the exact answers found: for each query the
// share of want[q] in got[q], averaged over queries. A query whose exact
// answer is empty counts as fully recalled.
func Recall(got, want [][]int) float64 {
	if len(got) != len(want) {
		panic(errors.New("recall of answers to different query sets"))
	}
	var sum float64
	for q := range want {
		if len(want[q]) == 0 {
			sum++
			continue
		}
		hit := 0
		for _, w := range want[q] {
			if slices.Contains(got[q], w) {
				hit++
			}
		}
		sum += float64(hit) / float64(len(want[q]))
	}
	return sum / float64(len(want))
}

// WriteAnswers writes answers (k indexes per query) as uint32 little
// endian, the --gt file of the hnswlib anchor script.
func WriteAnswers(path string, answers [][]int) error {
	var b []byte
	for _, a := range answers {
		for _, i := range a {
			b = binary.LittleEndian.AppendUint32(b, uint32(i))
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write answers: %w", err)
	}
	return nil
}

// ReadAnswers reads answers of k indexes per query written by
// WriteAnswers.
func ReadAnswers(path string, k int) ([][]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read answers: %w", err)
	}
	if k <= 0 || len(b)%(4*k) != 0 {
		return nil, fmt.Errorf("answers file %s: %d bytes is not a whole number of %d-index answers", path, len(b), k)
	}
	out := make([][]int, len(b)/(4*k))
	for q := range out {
		out[q] = make([]int, k)
		for j := range k {
			out[q][j] = int(binary.LittleEndian.Uint32(b[4*(q*k+j):]))
		}
	}
	return out, nil
}
