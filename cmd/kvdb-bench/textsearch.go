package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
)

// Rows 9k and 9hy search row 9's contexts by their words: keyword (BM25)
// alone, and hybrid (BM25 and the vector leg, fused by reciprocal rank).
const (
	// hybridP50Target is the hybrid p50 at 100,000 contexts, in
	// milliseconds.
	hybridP50Target = 20.0
	// vecSearchPath is the search route of row 9's topic, and vecClusters
	// the clusters its vectors are drawn around: context i and query q lie
	// in clusters i % vecClusters and q % vecClusters (stepVectors).
	vecSearchPath = "/api/v1/topics/vec/search"
	vecClusters   = 100
)

// textSetup is the query bodies of rows 9k and 9hy, and how often the
// context each query's words came from was among its k results.
type textSetup struct {
	keywordBodies, hybridBodies string
	keywordSource, hybridSource float64
}

type textQuery struct {
	Query     string    `json:"query"`
	Embedding []float32 `json:"embedding,omitempty"`
	K         int       `json:"k"`
	Mode      string    `json:"mode"`
}

// stepTextQueries writes the query bodies of rows 9k and 9hy, one pair per
// query of row 9. Query q is 3 or 4 consecutive words of a stored context
// of q's cluster; its hybrid form also carries row 9's query q, so the
// words and the embedding point at the same contexts, as a model's
// embedding of the words would. Every query is asked once first: each must
// answer, a hybrid one with k results.
func (s *suite) stepTextQueries(ctx context.Context) (*textSetup, error) {
	err := s.step("keyword and hybrid queries over row 9's contexts", func() error {
		if err := s.stepVectors(ctx); err != nil {
			return err
		}
		r := rand.New(rand.NewPCG(9, 0x6b77))
		u := "http://" + s.routerHit.addr + vecSearchPath
		var keyword, hybrid []string
		var keywordFound, hybridFound int
		for q := range s.vecQueries.Len() {
			src := q % vecClusters
			if src < s.o.vectors {
				src += vecClusters * r.IntN((s.o.vectors-1-src)/vecClusters+1)
			} else {
				src = r.IntN(s.o.vectors)
			}
			words := strings.Fields(s.corpus.fortuneText(uint64(src)))
			n := min(3+r.IntN(2), len(words))
			at := r.IntN(len(words) - n + 1)
			kq := textQuery{Query: strings.Join(words[at:at+n], " "), K: searchK, Mode: "keyword"}
			hq := textQuery{Query: kq.Query, Embedding: s.vecQueries.Row(q), K: searchK, Mode: "hybrid"}
			ids, err := s.searchIDs(ctx, u, mustJSON(&kq))
			if err != nil {
				return err
			}
			if ids[vecID(src)] {
				keywordFound++
			}
			if ids, err = s.searchIDs(ctx, u, mustJSON(&hq)); err != nil {
				return err
			}
			if len(ids) != searchK {
				return fmt.Errorf("hybrid search %q: %d results, want %d", hq.Query, len(ids), searchK)
			}
			if ids[vecID(src)] {
				hybridFound++
			}
			keyword = append(keyword, string(mustJSON(&kq)))
			hybrid = append(hybrid, string(mustJSON(&hq)))
		}
		t := &textSetup{
			keywordSource: float64(keywordFound) / float64(len(keyword)),
			hybridSource:  float64(hybridFound) / float64(len(hybrid)),
		}
		var err error
		if t.keywordBodies, err = s.writeLines("keyword-bodies.jsonl", keyword); err != nil {
			return err
		}
		if t.hybridBodies, err = s.writeLines("hybrid-bodies.jsonl", hybrid); err != nil {
			return err
		}
		s.text = t
		return nil
	})
	return s.text, err
}

// vecID is the id of row 9's context i.
func vecID(i int) string { return fmt.Sprintf("v%07d", i) }

// textTarget measures rows 9k and 9hy: wrk posts bodies to row 9's search
// route through the same router, with row 9's connections.
func (s *suite) textTarget(bodies string, found float64) *target {
	t := s.wrkTarget(wrkJob{base: "http://" + s.routerHit.addr, mode: "post", paths: s.searchPaths, bodies: bodies, conns: searchConns},
		[]*proc{s.routerHit}, s.shards, nil, s.o.cacheSize)
	t.note = func() string {
		return fmt.Sprintf("3 or 4 words of a stored context; that context in the top %d for %.0f%% of the queries;", searchK, 100*found)
	}
	return t
}

// searchIDs posts one search and returns the ids of its results.
func (s *suite) searchIDs(ctx context.Context, u string, body []byte) (map[string]bool, error) {
	status, msg, err := s.fetch(ctx, http.MethodPost, u, body)
	if err != nil || status != http.StatusOK {
		return nil, fmt.Errorf("search %s: %d %s %v", body, status, oneLine(msg), err)
	}
	var res struct {
		Results []struct {
			Metadata struct{ ID string }
		}
	}
	if err := json.Unmarshal([]byte(msg), &res); err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, r := range res.Results {
		ids[r.Metadata.ID] = true
	}
	return ids, nil
}
