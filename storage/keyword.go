package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/go-kvdb/go-kvdb/storage/kwindex"
)

// Keyword search. The buckets named in Options.TextBuckets ("text" by
// default) hold plain text in the format EncodeText writes, and the store
// keeps an inverted index of each (bucket "_kw_" + its name, in a BoltDB
// file of its own beside the records': never scanned, snapshotted or
// copied, and rebuilt from the records when it is missing). Every write, tombstone and
// purge of that bucket queues, in its own BoltDB transaction, what it did
// to the record, and a background indexer applies the queue in batches
// (kwindexer.go); a search first waits for the entries queued before it.
// So the index is exactly as durable as the records: a crash, a restore
// (which replays records through Apply), a repair or a rebalance (which
// copy and purge records) leave nothing to reconcile.
//
// Per group (a key through its first 0 byte: the router's topic) the index
// holds
//
//	'p' | group | term | 0 | key suffix → uvarint tf | uvarint doc length
//	'd' | group | key suffix            → uvarint version
//	's' | group                         → uvarint docs | uvarint total length
//
// where the suffix is the key after its group. A rewrite that leaves a
// document's terms as they were (a context whose metadata changed, or the
// same text written again) updates its 'd' record only; one of the same
// length, the postings whose tf changed; any other, all of them. A document frequency is
// the count of a term's postings, counted when a query asks: keeping a
// counter would cost one more write per term of every document.
//
// A search runs in two phases so that scores from different shards are
// comparable: KeywordStats reports this shard's counts for the query's
// terms, the caller sums them over every shard and sends them back with
// the query to Keyword, which scores its own postings with them (BM25,
// package kwindex). A value that is not readable text (sealed by the
// router) is stored but not indexed.
const (
	textFormatV1 = 1

	// MaxQueryTerms bounds the terms of one keyword query.
	MaxQueryTerms = 64

	pathKeywordStats = "/v1/kwstats/"
	pathKeyword      = "/v1/keyword/"

	kwBucketPrefix = "_kw_"
)

// DefaultTextBuckets are the buckets a store indexes for keyword search
// when Options.TextBuckets is nil: the router's.
var DefaultTextBuckets = []string{"text", "message_text"}

// Text is what a text record holds: the words to index, and the tags a
// search may filter by.
type Text struct {
	Tags []string
	Body string
}

// A text value is format (1) | uvarint n tags | (uvarint len tag | tag)* | body.

// EncodeText renders t in the stored text format.
func EncodeText(t Text) []byte {
	out := make([]byte, 0, 2+len(t.Body)+8*len(t.Tags))
	out = append(out, textFormatV1)
	out = binary.AppendUvarint(out, uint64(len(t.Tags)))
	for _, tag := range t.Tags {
		out = binary.AppendUvarint(out, uint64(len(tag)))
		out = append(out, tag...)
	}
	return append(out, t.Body...)
}

// DecodeText parses a stored text value.
func DecodeText(b []byte) (Text, error) {
	r := wireReader{b: b}
	if r.byte("text format") != textFormatV1 {
		return Text{}, fmt.Errorf("unknown text format: %w", ErrInvalid)
	}
	n := r.uvarint("text tags", uint64(len(r.b)))
	var t Text
	for range n {
		t.Tags = append(t.Tags, string(r.bytes("text tag", MaxKeySize)))
	}
	if r.err != nil {
		return Text{}, r.err
	}
	t.Body = string(r.b)
	return t, nil
}

// kwChange is what one write or purge does to a document of a text
// bucket, analysed: the indexer analyses a batch of queued entries before
// it takes the writer lock, then applies them in order (kwindexer.go).
type kwChange struct {
	bucket  string
	key     []byte
	version uint64
	purge   bool // the record went for good: version and after are unset
	// same is a write of the value held (the context's metadata
	// changed): only the version moves, if the value is indexed at all.
	same bool
	// before and after are the documents replaced and written; had and
	// has say whether each is indexed (text with a term).
	before, after kwindex.Doc
	had, has      bool
}

// postings is the measure of a change's work: the terms it touches.
func (c *kwChange) postings() int { return len(c.before.TF) + len(c.after.TF) }

// indexText brings c.bucket's keyword index in line with one change: the
// old document's postings go, the new one's come.
func indexText(tx *bolt.Tx, c *kwChange) error {
	g := vectorGroup(c.key)
	var ix *bolt.Bucket
	if c.purge {
		// A record purged before the index existed has nothing in it.
		if ix = tx.Bucket([]byte(kwBucketPrefix + c.bucket)); ix == nil {
			return nil
		}
	} else {
		var err error
		if ix, err = tx.CreateBucketIfNotExists([]byte(kwBucketPrefix + c.bucket)); err != nil {
			return fmt.Errorf("keyword index of %s: %w", c.bucket, err)
		}
	}
	group, suffix := c.key[:g], c.key[g:]
	before, after := c.before, c.after
	switch {
	case c.same:
		if ix.Get(docKey(group, suffix)) == nil {
			return nil
		}
		return ix.Put(docKey(group, suffix), binary.AppendUvarint(nil, c.version))
	case c.had && c.has && before.Len == after.Len:
		// Same length: the other postings hold what they held.
		for term := range before.TF {
			if after.TF[term] == 0 {
				if err := ix.Delete(postingKey(group, term, suffix)); err != nil {
					return fmt.Errorf("keyword posting: %w", err)
				}
			}
		}
		for term, tf := range after.TF {
			if before.TF[term] != tf {
				if err := putPosting(ix, group, term, suffix, tf, after.Len); err != nil {
					return err
				}
			}
		}
		return ix.Put(docKey(group, suffix), binary.AppendUvarint(nil, c.version))
	case c.had:
		if err := unindexDoc(ix, group, suffix, before); err != nil {
			return err
		}
	}
	if c.has {
		return indexDoc(ix, group, suffix, c.version, after)
	}
	return nil
}

func postingKey(group []byte, term string, suffix []byte) []byte {
	k := make([]byte, 0, 1+len(group)+len(term)+1+len(suffix))
	k = append(k, 'p')
	k = append(k, group...)
	k = append(k, term...)
	k = append(k, 0)
	return append(k, suffix...)
}

func statsKey(group []byte) []byte { return append([]byte{'s'}, group...) }

func docKey(group, suffix []byte) []byte {
	k := make([]byte, 0, 1+len(group)+len(suffix))
	k = append(k, 'd')
	k = append(k, group...)
	return append(k, suffix...)
}

// groupStats reads a group's document count and total length.
func groupStats(ix *bolt.Bucket, group []byte) (docs, length int64) {
	v := ix.Get(statsKey(group))
	if v == nil {
		return 0, 0
	}
	d, k := binary.Uvarint(v)
	if k <= 0 {
		return 0, 0
	}
	l, _ := binary.Uvarint(v[k:])
	return int64(d), int64(l)
}

func addStats(ix *bolt.Bucket, group []byte, docs, length int64) error {
	d, l := groupStats(ix, group)
	d, l = d+docs, l+length
	if d <= 0 {
		return ix.Delete(statsKey(group))
	}
	v := binary.AppendUvarint(nil, uint64(d))
	return ix.Put(statsKey(group), binary.AppendUvarint(v, uint64(max(l, 0))))
}

// docOf analyses a text value; ok is false for a value that is no text
// (sealed) or holds no term: such a document is not indexed.
func docOf(val []byte) (kwindex.Doc, bool) {
	t, err := DecodeText(val)
	if err != nil {
		return kwindex.Doc{}, false
	}
	d := kwindex.NewDoc(t.Body)
	return d, d.Len > 0
}

func putPosting(ix *bolt.Bucket, group []byte, term string, suffix []byte, tf, dl int) error {
	v := binary.AppendUvarint(make([]byte, 0, 2*binary.MaxVarintLen32), uint64(tf))
	v = binary.AppendUvarint(v, uint64(dl))
	if err := ix.Put(postingKey(group, term, suffix), v); err != nil {
		return fmt.Errorf("keyword posting: %w", err)
	}
	return nil
}

func indexDoc(ix *bolt.Bucket, group, suffix []byte, version uint64, d kwindex.Doc) error {
	for term, tf := range d.TF {
		if err := putPosting(ix, group, term, suffix, tf, d.Len); err != nil {
			return err
		}
	}
	if err := ix.Put(docKey(group, suffix), binary.AppendUvarint(nil, version)); err != nil {
		return fmt.Errorf("keyword document: %w", err)
	}
	return addStats(ix, group, 1, int64(d.Len))
}

func unindexDoc(ix *bolt.Bucket, group, suffix []byte, d kwindex.Doc) error {
	for term := range d.TF {
		if err := ix.Delete(postingKey(group, term, suffix)); err != nil {
			return fmt.Errorf("keyword posting: %w", err)
		}
	}
	if err := ix.Delete(docKey(group, suffix)); err != nil {
		return fmt.Errorf("keyword document: %w", err)
	}
	return addStats(ix, group, -1, -int64(d.Len))
}

// KeywordStats are the statistics BM25 needs of a collection: how many
// documents it holds, their total length in terms, and how many hold each
// query term (DF, by the query's Terms).
type KeywordStats struct {
	Docs, Length int64
	DF           []int64
}

// KeywordQuery asks for the K best BM25 matches of Terms (analysed by
// kwindex.QueryTerms) among the documents of one group (Prefix: a topic
// and its separator) that carry every one of Tags, scored with Stats: the
// whole collection's, summed over the shards.
type KeywordQuery struct {
	Prefix []byte
	Terms  []string
	K      int
	Tags   []string
	Stats  KeywordStats
}

func checkKeywordTerms(prefix []byte, terms []string) error {
	switch {
	case len(prefix) == 0 || vectorGroup(prefix) != len(prefix):
		return fmt.Errorf("keyword prefix %q is not one group (a name and its 0 byte): %w", prefix, ErrInvalid)
	case len(prefix) > MaxKeySize:
		return fmt.Errorf("prefix of %d bytes exceeds %d: %w", len(prefix), MaxKeySize, ErrInvalid)
	case len(terms) == 0 || len(terms) > MaxQueryTerms:
		return fmt.Errorf("keyword query of %d terms (want 1..%d): %w", len(terms), MaxQueryTerms, ErrInvalid)
	}
	for _, t := range terms {
		if t == "" || len(t) > kwindex.MaxTermLen || strings.IndexByte(t, 0) >= 0 {
			return fmt.Errorf("keyword term %q: %w", t, ErrInvalid)
		}
	}
	return nil
}

func checkKeyword(q *KeywordQuery) error {
	if err := checkKeywordTerms(q.Prefix, q.Terms); err != nil {
		return err
	}
	switch {
	case q.K < 1 || q.K > MaxTopK:
		return fmt.Errorf("top k %d (want 1..%d): %w", q.K, MaxTopK, ErrInvalid)
	case len(q.Stats.DF) != len(q.Terms):
		return fmt.Errorf("keyword stats of %d terms for %d: %w", len(q.Stats.DF), len(q.Terms), ErrInvalid)
	case q.Stats.Docs < 0 || q.Stats.Length < 0:
		return fmt.Errorf("negative keyword stats: %w", ErrInvalid)
	}
	return nil
}

// KeywordStats counts, for the documents of the group prefix in bucket,
// how many there are, their total length and each term's document
// frequency: phase one of a keyword search.
func (s *Store) KeywordStats(ctx context.Context, bucket string, prefix []byte, terms []string) (KeywordStats, error) {
	if err := checkBucket(bucket); err != nil {
		return KeywordStats{}, err
	}
	if err := checkKeywordTerms(prefix, terms); err != nil {
		return KeywordStats{}, err
	}
	st := KeywordStats{DF: make([]int64, len(terms))}
	if !s.kw.buckets[bucket] {
		return st, fmt.Errorf("bucket %s has no keyword index: %w", bucket, ErrInvalid)
	}
	if err := s.kw.waitIndexed(ctx); err != nil {
		return st, err
	}
	err := s.viewIndex(func(tx *bolt.Tx) error {
		ix := tx.Bucket([]byte(kwBucketPrefix + bucket))
		if ix == nil {
			return nil
		}
		st.Docs, st.Length = groupStats(ix, prefix)
		c := ix.Cursor()
		for i, t := range terms {
			p := postingKey(prefix, t, nil)
			for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
				st.DF[i]++
				if st.DF[i]%4096 == 0 {
					if err := ctx.Err(); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	return st, err
}

// Keyword returns the q.K documents of the group q.Prefix that score best
// for q.Terms by BM25 under q.Stats (phase two of a keyword search): best
// first, ties by key, each with its text record's version. Its cost is
// one read of each query term's postings on this shard.
func (s *Store) Keyword(ctx context.Context, bucket string, q KeywordQuery) (TopKResult, error) {
	if err := checkBucket(bucket); err != nil {
		return TopKResult{}, err
	}
	if err := checkKeyword(&q); err != nil {
		return TopKResult{}, err
	}
	if !s.kw.buckets[bucket] {
		return TopKResult{}, fmt.Errorf("bucket %s has no keyword index: %w", bucket, ErrInvalid)
	}
	start := time.Now()
	if err := s.kw.waitIndexed(ctx); err != nil {
		return TopKResult{}, err
	}
	type cand struct{ score float64 }
	var res TopKResult
	res.Exact = true // an inverted index answers exactly
	err := s.viewIndex(func(tx *bolt.Tx) error {
		ix := tx.Bucket([]byte(kwBucketPrefix + bucket))
		if ix == nil || q.Stats.Docs == 0 {
			return nil
		}
		avgdl := float64(q.Stats.Length) / float64(q.Stats.Docs)
		cands := map[string]*cand{}
		c := ix.Cursor()
		n := 0
		for i, t := range q.Terms {
			idf := kwindex.IDF(q.Stats.Docs, q.Stats.DF[i])
			p := postingKey(q.Prefix, t, nil)
			for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
				if n++; n%4096 == 0 {
					if err := ctx.Err(); err != nil {
						return err
					}
				}
				tf, a := binary.Uvarint(v)
				dl, b := binary.Uvarint(v[max(a, 0):])
				if a <= 0 || b <= 0 {
					return fmt.Errorf("keyword posting %q: %w", k, ErrInternal)
				}
				suffix := k[len(p):]
				cd := cands[string(suffix)]
				if cd == nil {
					cd = &cand{}
					cands[string(suffix)] = cd
				}
				cd.score += kwindex.Score(idf, int(tf), int(dl), avgdl)
			}
		}
		res.Scanned = len(cands)
		all := make([]Match, 0, len(cands))
		for suffix, cd := range cands {
			all = append(all, Match{Key: append(bytes.Clone(q.Prefix), suffix...), Score: cd.score})
		}
		SortMatches(all)
		var b *bolt.Bucket // the text records, for their tags
		if len(q.Tags) > 0 {
			rtx, err := s.db.Begin(false)
			if err != nil {
				return err
			}
			defer rtx.Rollback()
			b = rtx.Bucket([]byte(bucket))
		}
		for _, m := range all {
			if len(res.Matches) == q.K {
				break
			}
			if len(q.Tags) > 0 && (b == nil || !textHasTags(b.Get(m.Key), q.Tags)) {
				continue
			}
			v, n := binary.Uvarint(ix.Get(docKey(q.Prefix, m.Key[len(q.Prefix):])))
			if n <= 0 {
				return fmt.Errorf("keyword document %q has postings but no version: %w", m.Key, ErrInternal)
			}
			m.Version = v
			res.Matches = append(res.Matches, m)
		}
		return nil
	})
	if err != nil {
		return TopKResult{}, err
	}
	if s.keywordObs != nil {
		s.keywordObs(time.Since(start))
	}
	return res, nil
}

// viewIndex runs fn in a read transaction of the postings file (see
// kwindexer.go). fn may begin read transactions of the record file.
func (s *Store) viewIndex(fn func(*bolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.kw.db.View(fn)
}

func textHasTags(raw []byte, want []string) bool {
	if raw == nil {
		return false
	}
	_, tomb, val, err := parseStored(raw)
	if err != nil || tomb {
		return false
	}
	t, err := DecodeText(val)
	if err != nil {
		return false
	}
	for _, w := range want {
		if !slices.Contains(t.Tags, w) {
			return false
		}
	}
	return true
}

// KeywordIndexStats describes a store's keyword indexes, by text bucket.
type KeywordIndexStats struct {
	Docs  int64 // indexed documents, every group
	Keys  int64 // postings and group counters
	Bytes int64 // the index's share of the postings file: its pages' bytes
}

// KeywordDocs counts the documents of every keyword index: one read per
// group, cheap enough for every scrape. It counts the writes made before
// it, unless the indexer is more than keywordStatsWait behind.
func (s *Store) KeywordDocs() (int64, error) {
	_ = s.kw.waitIndexedFor(keywordStatsWait) // a closed store fails below
	var n int64
	err := s.viewIndex(func(tx *bolt.Tx) error {
		for b := range s.kw.buckets {
			if ix := tx.Bucket([]byte(kwBucketPrefix + b)); ix != nil {
				c := ix.Cursor()
				for k, _ := c.Seek([]byte{'s'}); k != nil && k[0] == 's'; k, _ = c.Next() {
					d, _ := groupStats(ix, k[1:])
					n += d
				}
			}
		}
		return nil
	})
	return n, err
}

// KeywordIndexStats reports the keyword indexes' sizes; it walks every
// page of the indexes. Like KeywordDocs, it first waits (a while) for the
// indexer to apply the writes made before it.
func (s *Store) KeywordIndexStats() (map[string]KeywordIndexStats, error) {
	_ = s.kw.waitIndexedFor(keywordStatsWait) // a closed store fails below
	out := map[string]KeywordIndexStats{}
	err := s.viewIndex(func(tx *bolt.Tx) error {
		for b := range s.kw.buckets {
			ix := tx.Bucket([]byte(kwBucketPrefix + b))
			if ix == nil {
				out[b] = KeywordIndexStats{}
				continue
			}
			bs := ix.Stats()
			st := KeywordIndexStats{Keys: int64(bs.KeyN), Bytes: int64(bs.BranchAlloc + bs.LeafAlloc)}
			c := ix.Cursor()
			for k, _ := c.Seek([]byte{'s'}); k != nil && k[0] == 's'; k, _ = c.Next() {
				d, _ := groupStats(ix, k[1:])
				st.Docs += d
			}
			out[b] = st
		}
		return nil
	})
	return out, err
}

// On the wire a keyword search is two requests:
//
//	stats request  = uvarint len prefix | prefix | uvarint n terms | (uvarint len term | term)*
//	stats response = docs (uvarint) | length (uvarint) | df (uvarint) per term
//	query request  = k (uvarint) | uvarint len prefix | prefix | uvarint n tags | (uvarint len tag | tag)*
//	               | docs (uvarint) | length (uvarint) | uvarint n terms | (uvarint len term | term | df (uvarint))*
//	query response = a TopK response

func appendTerms(dst []byte, terms []string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(terms)))
	for _, t := range terms {
		dst = binary.AppendUvarint(dst, uint64(len(t)))
		dst = append(dst, t...)
	}
	return dst
}

func appendKeywordStatsRequest(dst, prefix []byte, terms []string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(prefix)))
	dst = append(dst, prefix...)
	return appendTerms(dst, terms)
}

func parseKeywordStatsRequest(b []byte) (prefix []byte, terms []string, err error) {
	r := wireReader{b: b}
	prefix = r.bytes("prefix", MaxKeySize)
	n := r.uvarint("terms", MaxQueryTerms)
	for range n {
		terms = append(terms, string(r.bytes("term", kwindex.MaxTermLen)))
	}
	if r.err == nil && len(r.b) > 0 {
		r.fail("keyword stats request")
	}
	return prefix, terms, r.err
}

func appendKeywordStats(dst []byte, st *KeywordStats) []byte {
	dst = binary.AppendUvarint(dst, uint64(st.Docs))
	dst = binary.AppendUvarint(dst, uint64(st.Length))
	for _, df := range st.DF {
		dst = binary.AppendUvarint(dst, uint64(df))
	}
	return dst
}

func parseKeywordStats(b []byte, n int) (KeywordStats, error) {
	r := wireReader{b: b}
	st := KeywordStats{DF: make([]int64, n)}
	st.Docs = int64(r.uvarint("docs", math.MaxInt64))
	st.Length = int64(r.uvarint("length", math.MaxInt64))
	for i := range st.DF {
		st.DF[i] = int64(r.uvarint("document frequency", math.MaxInt64))
	}
	if r.err == nil && len(r.b) > 0 {
		r.fail("keyword stats")
	}
	return st, r.err
}

func appendKeywordQuery(dst []byte, q *KeywordQuery) []byte {
	dst = binary.AppendUvarint(dst, uint64(q.K))
	dst = binary.AppendUvarint(dst, uint64(len(q.Prefix)))
	dst = append(dst, q.Prefix...)
	dst = appendTerms(dst, q.Tags)
	dst = binary.AppendUvarint(dst, uint64(q.Stats.Docs))
	dst = binary.AppendUvarint(dst, uint64(q.Stats.Length))
	dst = binary.AppendUvarint(dst, uint64(len(q.Terms)))
	for i, t := range q.Terms {
		dst = binary.AppendUvarint(dst, uint64(len(t)))
		dst = append(dst, t...)
		dst = binary.AppendUvarint(dst, uint64(q.Stats.DF[i]))
	}
	return dst
}

func parseKeywordQuery(b []byte) (KeywordQuery, error) {
	r := wireReader{b: b}
	var q KeywordQuery
	q.K = int(r.uvarint("top k", MaxTopK))
	q.Prefix = r.bytes("prefix", MaxKeySize)
	ntags := r.uvarint("tags", uint64(len(r.b)))
	for range ntags {
		q.Tags = append(q.Tags, string(r.bytes("tag", MaxKeySize)))
	}
	q.Stats.Docs = int64(r.uvarint("docs", math.MaxInt64))
	q.Stats.Length = int64(r.uvarint("length", math.MaxInt64))
	n := r.uvarint("terms", MaxQueryTerms)
	for range n {
		q.Terms = append(q.Terms, string(r.bytes("term", kwindex.MaxTermLen)))
		q.Stats.DF = append(q.Stats.DF, int64(r.uvarint("document frequency", math.MaxInt64)))
	}
	if r.err == nil && len(r.b) > 0 {
		r.fail("keyword query")
	}
	return q, r.err
}

// keywordStats serves POST /v1/kwstats/{bucket}.
func (h *handler) keywordStats(w http.ResponseWriter, r *http.Request) {
	body := getBuf()
	defer putBuf(body)
	if _, err := body.ReadFrom(http.MaxBytesReader(w, r.Body, 2*MaxKeySize+MaxQueryTerms*(kwindex.MaxTermLen+2))); err != nil {
		h.fail(w, r, fmt.Errorf("read request: %v: %w", err, ErrInvalid))
		return
	}
	prefix, terms, err := parseKeywordStatsRequest(body.Bytes())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	st, err := h.store.KeywordStats(r.Context(), r.PathValue("bucket"), prefix, terms)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeBinary(w, appendKeywordStats(nil, &st))
}

// keyword serves POST /v1/keyword/{bucket}.
func (h *handler) keyword(w http.ResponseWriter, r *http.Request) {
	body := getBuf()
	defer putBuf(body)
	if _, err := body.ReadFrom(http.MaxBytesReader(w, r.Body, 1<<20)); err != nil {
		h.fail(w, r, fmt.Errorf("read request: %v: %w", err, ErrInvalid))
		return
	}
	q, err := parseKeywordQuery(body.Bytes())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.store.Keyword(r.Context(), r.PathValue("bucket"), q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := getBuf()
	defer putBuf(out)
	out.Write(appendTopKResult(out.AvailableBuffer(), &res))
	writeBinary(w, out.Bytes())
}

// KeywordStats asks the shard for its keyword statistics (see
// Store.KeywordStats).
func (c *Client) KeywordStats(ctx context.Context, bucket string, prefix []byte, terms []string) (KeywordStats, error) {
	if err := c.checkBucket(bucket); err != nil {
		return KeywordStats{}, err
	}
	if err := checkKeywordTerms(prefix, terms); err != nil {
		return KeywordStats{}, fmt.Errorf("shard %s: %w", c.name, err)
	}
	body, err := c.do(ctx, http.MethodPost, pathKeywordStats+bucket, appendKeywordStatsRequest(nil, prefix, terms))
	if err != nil {
		return KeywordStats{}, err
	}
	st, err := parseKeywordStats(body, len(terms))
	if err != nil {
		return KeywordStats{}, fmt.Errorf("shard %s: %v: %w", c.name, err, ErrInternal)
	}
	return st, nil
}

// Keyword asks the shard for its best keyword matches (see Store.Keyword).
func (c *Client) Keyword(ctx context.Context, bucket string, q KeywordQuery) (TopKResult, error) {
	if err := c.checkBucket(bucket); err != nil {
		return TopKResult{}, err
	}
	if err := checkKeyword(&q); err != nil {
		return TopKResult{}, fmt.Errorf("shard %s: %w", c.name, err)
	}
	body, err := c.do(ctx, http.MethodPost, pathKeyword+bucket, appendKeywordQuery(nil, &q))
	if err != nil {
		return TopKResult{}, err
	}
	res, err := parseTopKResult(body)
	if err != nil {
		return TopKResult{}, fmt.Errorf("shard %s: %v: %w", c.name, err, ErrInternal)
	}
	return res, nil
}

// AddTextStats counts one text value (EncodeText) into st as
// Store.KeywordStats counts an indexed document: a router that seals its
// text (so no shard can index it) computes the statistics itself. A value
// that is no text, or holds no term, is not counted.
func AddTextStats(st *KeywordStats, terms []string, val []byte) {
	d, ok := docOf(val)
	if !ok {
		return
	}
	if len(st.DF) != len(terms) {
		st.DF = make([]int64, len(terms))
	}
	st.Docs++
	st.Length += int64(d.Len)
	for i, t := range terms {
		if d.TF[t] > 0 {
			st.DF[i]++
		}
	}
}

// ScoreText scores one text value for q as Store.Keyword scores an indexed
// document; ok is false when the value matches no term or lacks a tag.
func ScoreText(q *KeywordQuery, val []byte) (score float64, ok bool) {
	t, err := DecodeText(val)
	if err != nil {
		return 0, false
	}
	for _, w := range q.Tags {
		if !slices.Contains(t.Tags, w) {
			return 0, false
		}
	}
	d := kwindex.NewDoc(t.Body)
	if d.Len == 0 || q.Stats.Docs == 0 || len(q.Stats.DF) != len(q.Terms) {
		return 0, false
	}
	avgdl := float64(q.Stats.Length) / float64(q.Stats.Docs)
	for i, term := range q.Terms {
		if tf := d.TF[term]; tf > 0 {
			score += kwindex.Score(kwindex.IDF(q.Stats.Docs, q.Stats.DF[i]), tf, d.Len, avgdl)
			ok = true
		}
	}
	return score, ok
}
