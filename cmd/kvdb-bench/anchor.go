package main

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/go-kvdb/go-kvdb/storage/vindex/vindextest"
)

//go:embed hnswlib_anchor.py
var hnswlibAnchor []byte

// anchorLine is one JSON line of hnswlib_anchor.py.
type anchorLine struct {
	Ef             int     `json:"ef"`
	QPS            float64 `json:"queries_per_s"`
	QPSOneCallEach float64 `json:"queries_per_s_one_call_each"`
	Recall         float64 `json:"recall"`
	InsertsPerS    float64 `json:"inserts_per_s"`
}

// stepHnswlib runs Debian's python3-hnswlib (one thread, M 16,
// ef_construction 200) once over row 9's vectors and queries: its build
// and its queries/s and recall@10 at ef 32, 64 and 128. Without the
// package the row is n/a.
func (s *suite) stepHnswlib(ctx context.Context) error {
	return s.step("hnswlib anchor over row 9's vectors", func() error {
		if err := exec.Command("/usr/bin/python3", "-c", "import hnswlib, numpy").Run(); err != nil {
			return &naError{"needs python3-hnswlib and python3-numpy (apt-get install python3-hnswlib python3-numpy)"}
		}
		if s.vecBase == nil {
			s.vecBase = vindextest.Clustered(1, 2, s.o.vectors, embeddingDims, 100, 1)
			s.vecQueries = vindextest.Clustered(1, 3, 200, embeddingDims, 100, 1)
		}
		script := filepath.Join(s.dir, "hnswlib_anchor.py")
		basePath, queryPath := filepath.Join(s.dir, "vec-base.bin"), filepath.Join(s.dir, "vec-queries.bin")
		if err := os.WriteFile(script, hnswlibAnchor, 0o644); err != nil {
			return err
		}
		if err := vindextest.WriteFile(basePath, s.vecBase); err != nil {
			return err
		}
		if err := vindextest.WriteFile(queryPath, s.vecQueries); err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, "/usr/bin/python3", script, basePath, queryPath, "--ef", "32,64,128", "--rounds", "3")
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("hnswlib anchor: %v", err)
		}
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			var l anchorLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				return fmt.Errorf("hnswlib anchor line %q: %v", sc.Text(), err)
			}
			switch {
			case l.InsertsPerS > 0:
				s.hnswBuild = l
			case l.Ef > 0:
				s.hnswEf = append(s.hnswEf, l)
			}
		}
		if len(s.hnswEf) == 0 {
			return fmt.Errorf("hnswlib anchor printed no query lines: %s", out)
		}
		return nil
	})
}

// hnswlibTarget reports the anchor's single-threaded queries/s at ef 64
// (the one run's figure each round: the build takes minutes).
func (s *suite) hnswlibTarget() *target {
	pick := s.hnswEf[0]
	for _, l := range s.hnswEf {
		if l.Ef == 64 {
			pick = l
		}
	}
	return &target{
		measure:   func(context.Context) (sample, error) { return sample{rps: pick.QPS}, nil },
		cacheSize: -1,
		note: func() string {
			var parts []string
			for _, l := range s.hnswEf {
				parts = append(parts, fmt.Sprintf("ef %d: %.0f q/s (%.0f one call each), recall@10 %.3f", l.Ef, l.QPS, l.QPSOneCallEach, l.Recall))
			}
			// Its RSS growth per vector is not reported: ru_maxrss is a
			// peak, already reached while numpy read the vectors.
			return fmt.Sprintf("one thread, M 16, ef_construction 200; build %.0f inserts/s; %s; one run, not per round",
				s.hnswBuild.InsertsPerS, strings.Join(parts, "; "))
		},
	}
}
