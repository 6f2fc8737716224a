package vindex

// A graph never unlinks a node: a deleted slot stays a waypoint. When
// deleted slots pass Config.RebuildShare of all slots, the index builds a
// new graph from its live vectors in a goroutine of its own, while the old
// one goes on answering and taking writes; writes made meanwhile are
// noted in the journal and replayed onto the new graph just before the
// swap.

// noteJournal records that key changed while a rebuild runs. Caller holds
// wmu.
func (x *Index) noteJournal(key string) {
	if x.journal != nil {
		x.journal[key] = struct{}{}
	}
}

// maybeRebuild starts a rebuild when deleted slots have passed the share.
// Caller holds wmu.
func (x *Index) maybeRebuild() {
	st := x.st
	if x.journal != nil || st.g.n < minRebuildSlots || float64(st.dead) < x.cfg.RebuildShare*float64(st.g.n) {
		return
	}
	x.startRebuild()
}

// Rebuild builds the graph anew from the live vectors, in the background,
// whatever the share of deleted slots (for an operator's reindex). It
// returns at once; Stats().Building tells when it has finished.
func (x *Index) Rebuild() error {
	x.wmu.Lock()
	defer x.wmu.Unlock()
	if x.isClosed() {
		return ErrClosed
	}
	if x.journal == nil {
		x.startRebuild()
	}
	return nil
}

// startRebuild snapshots the live slots and starts the rebuild goroutine.
// Caller holds wmu, so the snapshot and the journal start together.
func (x *Index) startRebuild() {
	x.mu.RLock()
	old := x.st
	live := make([]uint32, 0, old.g.n-old.dead)
	for i := range old.g.n {
		if !old.g.dead[i] {
			live = append(live, uint32(i))
		}
	}
	// The snapshot keeps its own view of the old graph's slices: the old
	// graph goes on growing, but a slot's vector, key and version never
	// change once written.
	snap := &state{
		g:    &graph{dim: old.g.dim, vecs: append([][]float32(nil), old.g.vecs...)},
		keys: old.keys[:old.g.n:old.g.n],
		vers: old.vers[:old.g.n:old.g.n],
	}
	x.mu.RUnlock()
	x.journal = make(map[string]struct{})
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		x.rebuild(snap, live)
	}()
}

func (x *Index) rebuild(snap *state, live []uint32) {
	next := newState(x.cfg, x.cfg.Seed+uint64(len(snap.keys)))
	slots := make(map[string]int32, len(live))
	for n, i := range live {
		if n%256 == 0 && x.ctx.Err() != nil {
			x.wmu.Lock()
			x.journal = nil
			x.wmu.Unlock()
			return
		}
		slots[snap.keys[i]] = int32(next.insert(snap.g.vec(i), snap.keys[i], snap.vers[i]))
	}

	x.wmu.Lock()
	defer x.wmu.Unlock()
	journal := x.journal
	x.journal = nil
	if x.ctx.Err() != nil {
		return
	}
	// Replay what changed since the snapshot: the old state, under wmu,
	// is the truth for every journalled key.
	x.mu.RLock()
	cur := x.st
	for key := range journal {
		if s, ok := slots[key]; ok {
			next.g.dead[s] = true
			next.dead++
			delete(slots, key)
		}
		if e, ok := x.entries[key]; ok && e.slot >= 0 {
			slots[key] = int32(next.insert(cur.g.vec(uint32(e.slot)), key, e.version))
		}
	}
	x.mu.RUnlock()

	x.mu.Lock()
	x.st = next
	for key, e := range x.entries {
		switch s, ok := slots[key]; {
		case ok:
			x.entries[key] = entry{slot: s, version: e.version}
		case e.slot >= 0:
			panic("vindex: live key " + key + " missing from the rebuilt graph")
		default:
			// A deleted key's version guarded against late older writes;
			// a rebuild is long after, so forget it.
			delete(x.entries, key)
		}
	}
	x.mu.Unlock()
}

// insert adds v (unit length) as a new slot of a state no one else sees
// yet, and returns the slot.
func (st *state) insert(v []float32, key string, version uint64) uint32 {
	l := st.g.randomLevel()
	p := st.g.plan(v, l)
	i := st.g.add(v, l)
	st.g.link(i, p)
	st.keys = append(st.keys, key)
	st.vers = append(st.vers, version)
	return i
}

// Close stops a rebuild in progress and waits for it; the index then
// refuses every call with ErrClosed.
func (x *Index) Close() error {
	x.cancel()
	x.wg.Wait()
	x.wmu.Lock()
	defer x.wmu.Unlock()
	x.mu.Lock()
	defer x.mu.Unlock()
	x.closed = true
	return nil
}

// Stats describes an index.
type Stats struct {
	Dim      int
	Vectors  int   // live vectors: what searches can return
	Deleted  int   // deleted slots still in the graph (waypoints)
	Bytes    int64 // memory the index holds, estimated from its parts
	Building bool  // a rebuild is running
	Ready    bool  // searches are answered from the index (see SetReady)
}

// Stats returns the index's counts.
func (x *Index) Stats() Stats {
	x.wmu.Lock()
	building := x.journal != nil
	x.wmu.Unlock()
	x.mu.RLock()
	defer x.mu.RUnlock()
	st := x.st
	return Stats{
		Dim:      x.cfg.Dim,
		Vectors:  st.g.n - st.dead,
		Deleted:  st.dead,
		Bytes:    x.bytesLocked(),
		Building: building,
		Ready:    x.ready,
	}
}

// Len is the number of live vectors.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.st.g.n - x.st.dead
}

// bytesLocked estimates the memory held: per slot its vector, its
// layer-0 list, level and deleted flag, key (string header and bytes) and
// version, its upper layers, and per known key a map entry (key, entry
// and about 16 bytes of map overhead). Caller holds mu.
func (x *Index) bytesLocked() int64 {
	st := x.st
	g := st.g
	n := int64(g.n)
	b := int64(len(g.vecs)) * chunkSlots * int64(g.dim) * 4 // whole chunks
	b += n * (int64(g.m0+1)*4 + 1 + 1 + 16 + 8 + 24)        // links0, level, dead, key header, version, upper header
	for i := range g.n {
		b += int64(len(g.upper[i])) * 4
		b += int64(len(st.keys[i]))
	}
	for k := range x.entries {
		b += int64(len(k)) + 16 + 16 + 16
	}
	return b
}
