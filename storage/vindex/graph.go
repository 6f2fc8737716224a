package vindex

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
)

// graph is a hierarchical navigable small world graph (Malkov & Yashunin,
// arXiv:1603.09320) over unit vectors of one dimension, shaped as hnswlib
// shapes it: nodes are dense uint32 slots, the vectors of a slot range sit
// in one chunk, layer-0 neighbour lists have a fixed stride, and neighbours
// are chosen with the paper's heuristic (algorithm 4).
//
// The graph knows slots, not keys, and never removes a node: a deleted
// slot stays as a waypoint and is only kept out of answers (Index rebuilds
// the graph when deleted slots grow past a share). Its methods do no
// locking; Index calls the searches under a read lock and the mutations
// (grow, link) under the write lock.
type graph struct {
	dim    int
	m, m0  int     // neighbours kept per node above layer 0, and on layer 0
	efc    int     // candidates considered when inserting
	ml     float64 // level multiplier, 1/ln(m)
	rng    *rand.Rand
	n      int         // slots in use
	vecs   [][]float32 // chunks of chunkSlots vectors; a chunk never moves
	links0 []uint32    // slot*(m0+1): count, then m0 neighbours
	upper  [][]uint32  // per slot, its layers 1..level: (m+1) words each
	level  []uint8
	dead   []bool // deleted: a waypoint, never an answer

	entry    uint32
	maxLevel int // -1 while empty

	visited sync.Pool // *visitList
}

const (
	chunkSlots = 1024
	maxLevel   = 16
)

func newGraph(dim, m, efc int, seed uint64) *graph {
	return &graph{
		dim: dim, m: m, m0: 2 * m, efc: efc,
		ml:       1 / math.Log(float64(m)),
		rng:      rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
		maxLevel: -1,
	}
}

func (g *graph) vec(i uint32) []float32 {
	c := g.vecs[i/chunkSlots]
	o := int(i%chunkSlots) * g.dim
	return c[o : o+g.dim : o+g.dim]
}

// neighbours returns slot i's neighbour list on layer l (aliasing the
// graph: read it under the lock the caller holds).
func (g *graph) neighbours(i uint32, l int) []uint32 {
	if l == 0 {
		b := g.links0[int(i)*(g.m0+1):]
		return b[1 : 1+b[0]]
	}
	b := g.upper[i][(l-1)*(g.m+1):]
	return b[1 : 1+b[0]]
}

func (g *graph) setNeighbours(i uint32, l int, ns []uint32) {
	var b []uint32
	if l == 0 {
		b = g.links0[int(i)*(g.m0+1):]
	} else {
		b = g.upper[i][(l-1)*(g.m+1):]
	}
	b[0] = uint32(len(ns))
	copy(b[1:], ns)
}

func (g *graph) randomLevel() int {
	l := int(-math.Log(1-g.rng.Float64()) * g.ml)
	return min(l, maxLevel)
}

// add appends a slot holding v (unit length, len dim) with level l and no
// neighbours yet. Caller holds the write lock.
func (g *graph) add(v []float32, l int) uint32 {
	i := uint32(g.n)
	if g.n%chunkSlots == 0 {
		g.vecs = append(g.vecs, make([]float32, chunkSlots*g.dim))
	}
	copy(g.vec(i), v)
	g.links0 = append(g.links0, make([]uint32, g.m0+1)...)
	var up []uint32
	if l > 0 {
		up = make([]uint32, l*(g.m+1))
	}
	g.upper = append(g.upper, up)
	g.level = append(g.level, uint8(l))
	g.dead = append(g.dead, false)
	g.n++
	return i
}

// insertPlan is what the read-locked half of an insert found: the
// neighbours of the new node on each of its layers.
type insertPlan struct {
	level int
	links [][]uint32 // links[l]: chosen neighbours on layer l
}

// plan finds the neighbours a new vector v of level l gets. It only reads
// the graph: call it under the read lock.
func (g *graph) plan(v []float32, l int) insertPlan {
	p := insertPlan{level: l, links: make([][]uint32, l+1)}
	if g.maxLevel < 0 {
		return p
	}
	cur := g.entry
	curD := g.dist(v, cur)
	for lv := g.maxLevel; lv > l; lv-- {
		cur, curD = g.greedy(v, cur, curD, lv)
	}
	vl := g.getVisited()
	defer g.visited.Put(vl)
	for lv := min(l, g.maxLevel); lv >= 0; lv-- {
		w, _ := g.searchLayer(v, cur, curD, g.efc, lv, vl, nil, 0)
		cands := w.sorted()
		p.links[lv] = g.selectHeuristic(cands, g.m)
		cur, curD = cands[0].id, cands[0].d
	}
	return p
}

// link adds slot i (already added, with the plan's level) to the graph:
// its own lists, the reverse edges, and the entry point. Caller holds the
// write lock.
func (g *graph) link(i uint32, p insertPlan) {
	for lv := 0; lv < len(p.links); lv++ {
		ns := p.links[lv]
		g.setNeighbours(i, lv, ns)
		mmax := g.m
		if lv == 0 {
			mmax = g.m0
		}
		for _, e := range ns {
			have := g.neighbours(e, lv)
			if len(have) < mmax {
				g.setNeighbours(e, lv, append(slices.Clip(have), i))
				continue
			}
			// Full: keep the heuristic's pick among the old list and i.
			ev := g.vec(e)
			cands := make([]cand, 0, len(have)+1)
			cands = append(cands, cand{g.dist(ev, i), i})
			for _, h := range have {
				cands = append(cands, cand{g.dist(ev, h), h})
			}
			slices.SortFunc(cands, cmpCand)
			g.setNeighbours(e, lv, g.selectHeuristic(cands, mmax))
		}
	}
	if p.level > g.maxLevel {
		g.entry, g.maxLevel = i, p.level
	}
}

// selectHeuristic keeps up to m of cands (sorted nearest first) that are
// nearer to the base than to any neighbour kept before them: the paper's
// heuristic, which keeps links into other clusters that plain nearest-m
// would drop.
func (g *graph) selectHeuristic(cands []cand, m int) []uint32 {
	out := make([]uint32, 0, m)
	for _, c := range cands {
		if len(out) == m {
			break
		}
		cv := g.vec(c.id)
		good := true
		for _, r := range out {
			if g.dist(cv, r) < c.d {
				good = false
				break
			}
		}
		if good {
			out = append(out, c.id)
		}
	}
	return out
}

// dist is the distance of v to slot i: the negated cosine, for unit
// vectors, so nearer is smaller and the score is -dist exactly.
func (g *graph) dist(v []float32, i uint32) float32 { return -dot(v, g.vec(i)) }

func (g *graph) greedy(v []float32, cur uint32, curD float32, l int) (uint32, float32) {
	for changed := true; changed; {
		changed = false
		for _, e := range g.neighbours(cur, l) {
			if d := g.dist(v, e); d < curD {
				cur, curD, changed = e, d, true
			}
		}
	}
	return cur, curD
}

// searchLayer is the paper's algorithm 2 on layer l from entry point ep:
// it returns up to ef nearest admitted slots. admit (nil: all) says which
// slots may be answers; every slot is still walked through, so a filter or
// deleted slots do not cut the graph. It stops early once it has compared
// budget slots (0: no limit), and returns how many it compared.
func (g *graph) searchLayer(v []float32, ep uint32, epD float32, ef, l int, vl *visitList, admit func(uint32) bool, budget int) (*maxHeap, int) {
	vl.reset(g.n)
	vl.visit(ep)
	walked := 1
	var cands minHeap
	res := &maxHeap{}
	cands.push(cand{epD, ep})
	if admit == nil || admit(ep) {
		res.push(cand{epD, ep})
	}
	for len(cands) > 0 {
		c := cands.pop()
		if res.len() >= ef && c.d > res.top().d {
			break
		}
		for _, e := range g.neighbours(c.id, l) {
			if vl.visit(e) {
				continue
			}
			walked++
			d := g.dist(v, e)
			if res.len() < ef || d < res.top().d {
				cands.push(cand{d, e})
				if admit == nil || admit(e) {
					res.push(cand{d, e})
					if res.len() > ef {
						res.pop()
					}
				}
			}
		}
		if budget > 0 && walked >= budget {
			break
		}
	}
	return res, walked
}

type cand struct {
	d  float32
	id uint32
}

func cmpCand(a, b cand) int {
	switch {
	case a.d < b.d:
		return -1
	case a.d > b.d:
		return 1
	}
	return int(a.id) - int(b.id)
}

// minHeap pops the nearest candidate first.
type minHeap []cand

func (h *minHeap) push(c cand) {
	*h = append(*h, c)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if s[p].d <= s[i].d {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

func (h *minHeap) pop() cand {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s = s[:n]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < n && s[l].d < s[m].d {
			m = l
		}
		if r := l + 1; r < n && s[r].d < s[m].d {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// maxHeap keeps the farthest kept result on top, to be evicted first.
type maxHeap struct{ s []cand }

func (h *maxHeap) len() int  { return len(h.s) }
func (h *maxHeap) top() cand { return h.s[0] }

func (h *maxHeap) push(c cand) {
	h.s = append(h.s, c)
	s := h.s
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if s[p].d >= s[i].d {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

func (h *maxHeap) pop() cand {
	s := h.s
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s = s[:n]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < n && s[l].d > s[m].d {
			m = l
		}
		if r := l + 1; r < n && s[r].d > s[m].d {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	h.s = s
	return top
}

// sorted empties the heap into a slice, nearest first.
func (h *maxHeap) sorted() []cand {
	out := slices.Clone(h.s)
	slices.SortFunc(out, cmpCand)
	return out
}

// visitList marks slots seen by one search. A generation counter makes
// reset O(1): a slot is visited when its mark equals the current one.
type visitList struct {
	mark []uint32
	gen  uint32
}

func (g *graph) getVisited() *visitList {
	if vl, ok := g.visited.Get().(*visitList); ok {
		return vl
	}
	return &visitList{}
}

func (vl *visitList) reset(n int) {
	if len(vl.mark) < n {
		vl.mark = make([]uint32, n+n/4)
		vl.gen = 0
	}
	vl.gen++
	if vl.gen == 0 { // wrapped: old marks could collide
		clear(vl.mark)
		vl.gen = 1
	}
}

// visit marks i and reports whether it was already marked.
func (vl *visitList) visit(i uint32) bool {
	if vl.mark[i] == vl.gen {
		return true
	}
	vl.mark[i] = vl.gen
	return false
}

// search returns up to k admitted slots nearest to v (unit length),
// nearest first, walking with ef candidates, and the slots it compared on
// layer 0. budget bounds those (0: none); exhausted reports that the bound
// was hit.
func (g *graph) search(v []float32, k, ef int, admit func(uint32) bool, budget int) (out []cand, walked int, exhausted bool) {
	if g.maxLevel < 0 {
		return nil, 0, false
	}
	cur := g.entry
	curD := g.dist(v, cur)
	for lv := g.maxLevel; lv > 0; lv-- {
		cur, curD = g.greedy(v, cur, curD, lv)
	}
	vl := g.getVisited()
	res, walked := g.searchLayer(v, cur, curD, max(ef, k), 0, vl, admit, budget)
	g.visited.Put(vl)
	out = res.sorted()
	if len(out) > k {
		out = out[:k]
	}
	return out, walked, budget > 0 && walked >= budget
}
