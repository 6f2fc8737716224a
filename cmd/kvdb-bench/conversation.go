package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// Row 11 (issue 14): the cost of a conversation's turn against its length.
// One conversation is appended to and read one request at a time, as a
// chat does: append p50 (POST …/messages, one 1 KB message) and
// GET …/messages?last=20 p50, at convShort and convLong messages, on a
// single-node router and on three shards with replicas = 3. The targets are
// ratios of the long to the short row measured in the same run. The note
// of the sharded append rows says how many bytes the storage daemons'
// commits wrote to their files per append (kvdb_bolt_written_bytes_total);
// the single-node router exports no such metric.
const (
	convShort   = 10
	convLong    = 10000
	convMsgSize = 1024
	convTopic   = "conv"
	// convCopies is how many conversations of each length a setup holds:
	// appends cycle over them so the short ones stay short over the rounds.
	convCopies = 8
	// convRequests bounds one measurement (it also stops at -duration).
	convRequests = 200
)

// convSetup is one topology holding conversations of both lengths.
type convSetup struct {
	base   string // the router's URL
	router *proc
	shards []*proc
}

// stepConvSingle starts a single-node router (its own BoltDB file) with
// the conversations loaded.
func (s *suite) stepConvSingle(ctx context.Context) (*convSetup, error) {
	var cs *convSetup
	err := s.step("single-node router with conversations", func() error {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		p, err := s.start("router-conv1", addr, s.routerBin, "-http-addr="+addr,
			"-db-location="+filepath.Join(s.dir, "data", "conv1.db"), "-max-body-size="+strconv.Itoa(64<<20))
		if err != nil {
			return err
		}
		if err := p.waitHTTP(ctx, "http://"+addr+"/readyz", 15*time.Second); err != nil {
			return err
		}
		s.convSingle = &convSetup{base: "http://" + addr, router: p}
		return s.loadConversations(ctx, s.convSingle.base)
	})
	cs = s.convSingle
	return cs, err
}

// stepConvR3 starts three storage daemons of its own and a router over
// them with replicas = 3, with the conversations loaded.
func (s *suite) stepConvR3(ctx context.Context) (*convSetup, error) {
	err := s.step("three shards, replicas = 3, with conversations", func() error {
		shards, err := s.startShards(ctx, "cv")
		if err != nil {
			return err
		}
		r, err := s.startRouter(ctx, "router-conv3", shards, 3, "-max-body-size="+strconv.Itoa(64<<20))
		if err != nil {
			return err
		}
		s.convR3 = &convSetup{base: "http://" + r.addr, router: r, shards: shards}
		return s.loadConversations(ctx, s.convR3.base)
	})
	return s.convR3, err
}

func convID(n, copy int) string { return fmt.Sprintf("c%d-%d", n, copy) }

// convMessage is message i of a conversation, about convMsgSize bytes of
// JSON, alternating user and assistant.
func (s *suite) convMessage(i int) map[string]string {
	role := "user"
	if i%2 == 1 {
		role = "assistant"
	}
	text := s.corpus.doc4K(uint64(i), "m", convMsgSize)
	return map[string]string{"role": role, "content": string(text[:min(len(text), convMsgSize-40)])}
}

// loadConversations stores convCopies conversations of convShort messages
// and two of convLong, each written whole with one PUT (an append at a
// time would cost the old format the square of the length), then appends
// one message to each.
func (s *suite) loadConversations(ctx context.Context, base string) error {
	if s.corpus == nil {
		s.corpus = loadCorpus()
	}
	if err := s.createTopic(ctx, base, convTopic); err != nil {
		return err
	}
	for _, c := range []struct{ n, copies int }{{convShort, convCopies}, {convLong, 2}} {
		for copy := range c.copies {
			msgs := make([]map[string]string, c.n)
			for i := range msgs {
				msgs[i] = s.convMessage(i)
			}
			body, err := json.Marshal(map[string]any{"content": map[string]any{"messages": msgs}})
			if err != nil {
				return err
			}
			u := fmt.Sprintf("%s/api/v1/topics/%s/contexts/%s", base, convTopic, convID(c.n, copy))
			if code, msg, err := s.do(ctx, "PUT", u, body); err != nil || code >= 300 {
				return fmt.Errorf("PUT %s (%d messages): %d %s %v", u, c.n, code, msg, err)
			}
			// One append, so a router that stores messages as records has
			// converted the conversation before anything is measured (the
			// conversion rewrites it once; the rows measure what follows).
			one, _ := json.Marshal(map[string]any{"messages": []map[string]string{s.convMessage(c.n)}})
			if code, msg, err := s.do(ctx, "POST", u+"/messages", one); err != nil || code != 200 {
				return fmt.Errorf("POST %s/messages: %d %s %v", u, code, msg, err)
			}
		}
	}
	return nil
}

// convTarget measures appends (get false) or reads of the last 20 (get
// true) on the conversations of length n in cs.
func (s *suite) convTarget(cs *convSetup, n int, get bool) *target {
	copies := convCopies
	if n == convLong {
		copies = 2
	}
	var appends, written float64
	next := 0
	msg, _ := json.Marshal(map[string]any{"messages": []map[string]string{s.convMessage(1)}})
	t := &target{
		routers:   []*proc{cs.router},
		shards:    cs.shards,
		cacheSize: -1,
	}
	t.measure = func(ctx context.Context) (sample, error) {
		w0, err := s.writtenBytes(ctx, cs.shards)
		if err != nil {
			return sample{}, err
		}
		cpuR0, cpuS0, cpuG0 := cpuOf([]*proc{cs.router}), cpuOf(cs.shards), cpuSeconds(os.Getpid())
		var lat []float64
		start := time.Now()
		for i := 0; i < convRequests && time.Since(start) < s.o.duration; i++ {
			u := fmt.Sprintf("%s/api/v1/topics/%s/contexts/%s/messages", cs.base, convTopic, convID(n, next%copies))
			next++
			t0 := time.Now()
			var code int
			var body string
			if get {
				code, body, err = s.do(ctx, "GET", u+"?last=20", nil)
			} else {
				code, body, err = s.do(ctx, "POST", u, msg)
			}
			if err != nil || code != 200 {
				return sample{}, fmt.Errorf("%s: %d %s %v", u, code, body, err)
			}
			lat = append(lat, float64(time.Since(t0).Microseconds())/1000)
		}
		wall := time.Since(start).Seconds()
		w1, err := s.writtenBytes(ctx, cs.shards)
		if err != nil {
			return sample{}, err
		}
		if !get {
			appends, written = appends+float64(len(lat)), written+float64(w1-w0)
		}
		slices.Sort(lat)
		smp := sample{rps: float64(len(lat)) / wall, p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
		smp.cpuRouter = (cpuOf([]*proc{cs.router}) - cpuR0) / wall
		smp.cpuShard = (cpuOf(cs.shards) - cpuS0) / wall
		smp.cpuGen = (cpuSeconds(os.Getpid()) - cpuG0) / wall
		return smp, nil
	}
	t.note = func() string {
		if appends == 0 || written == 0 {
			return "one request at a time;"
		}
		return fmt.Sprintf("one request at a time; storaged wrote %.0f bytes to its files per append (all replicas);", written/appends)
	}
	return t
}

// writtenBytes sums what the shards' commits wrote to their files (0
// for binaries without the metric).
func (s *suite) writtenBytes(ctx context.Context, shards []*proc) (float64, error) {
	var total float64
	for _, p := range shards {
		n, err := s.metricOrZero(ctx, "http://"+p.addr, "kvdb_bolt_written_bytes_total")
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}
