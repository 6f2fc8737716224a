package router

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// doc4K is a context document of about 4 KB of JSON, like the benchmark
// suite's.
func doc4K(id string) *schema.Document {
	return &schema.Document{
		Metadata: schema.Metadata{ID: id, CreatedAt: "2024-03-20T10:00:00Z", Model: "llama2", Tags: []string{"chat", "support"}},
		Content:  schema.Content{Text: strings.Repeat("User asked how to rotate the keys of the cluster; assistant explained the steps. ", 50)[:3900]},
	}
}

func BenchmarkCodecEncode(b *testing.B) {
	c, _ := newCodec()
	d := doc4K("bench")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.encodeDocument(d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCodecRender(b *testing.B) {
	c, _ := newCodec()
	stored, _ := c.encodeDocument(doc4K("bench"))
	buf := make([]byte, 0, 8192)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.appendDocumentJSON(buf[:0], stored, true); err != nil {
			b.Fatal(err)
		}
	}
}

// chatDoc4K is a chat context of about 4 KB of JSON made of chatBody
// turns, the kind a trained dictionary is for.
func chatDoc4K() *schema.Document {
	d := &schema.Document{Metadata: schema.Metadata{ID: "bench", CreatedAt: "2024-03-20T10:00:00Z", Model: "llama3", Tags: []string{"chat"}}}
	for seed := 0; len(d.Content.Messages) < 30; seed++ {
		raw, _ := json.Marshal(chatBody(seed))
		var c schema.Content
		json.Unmarshal(raw, &c)
		d.Content.Messages = append(d.Content.Messages, c.Messages[1:]...)
	}
	return d
}

// dictCodecs returns a codec without a dictionary and one with a
// dictionary trained on other chat bodies.
func dictCodecs(b *testing.B) map[string]*codec {
	plain, _ := newCodec()
	withDict, _ := newCodec()
	const id = 77_777
	if err := withDict.addDict(id, testDict(b, id)); err != nil {
		b.Fatal(err)
	}
	withDict.setCurrent(id)
	return map[string]*codec{"plain": plain, "dict": withDict}
}

// BenchmarkCodecEncodeChat compares compressing a chat context with plain
// zstd and with a trained dictionary (stored bytes are reported).
func BenchmarkCodecEncodeChat(b *testing.B) {
	d := chatDoc4K()
	for _, name := range []string{"plain", "dict"} {
		c := dictCodecs(b)[name]
		b.Run(name, func(b *testing.B) {
			stored, _ := c.encodeDocument(d)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.encodeDocument(d); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(stored)), "stored-bytes")
		})
	}
}

// BenchmarkCodecRenderChat is the cache-miss read of the same context.
func BenchmarkCodecRenderChat(b *testing.B) {
	d := chatDoc4K()
	for _, name := range []string{"plain", "dict"} {
		c := dictCodecs(b)[name]
		b.Run(name, func(b *testing.B) {
			stored, _ := c.encodeDocument(d)
			buf := make([]byte, 0, 8192)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.appendDocumentJSON(buf[:0], stored, true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCodecRenderEmbedding768(b *testing.B) {
	c, _ := newCodec()
	d := doc4K("bench")
	d.Content.Embeddings = make([]float32, 768)
	for i := range d.Content.Embeddings {
		d.Content.Embeddings[i] = float32(i) / 997
	}
	stored, _ := c.encodeDocument(d)
	buf := make([]byte, 0, 16384)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.appendDocumentJSON(buf[:0], stored, true); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMergePages(b *testing.B) {
	pages := make([]storage.ScanPage, 3)
	for s := range pages {
		for i := range 100 {
			pages[s].Records = append(pages[s].Records, storage.Record{Key: fmt.Appendf(nil, "t\x00c%05d", i*3+s), Version: 1})
		}
		pages[s].More = true
	}
	b.ReportAllocs()
	for b.Loop() {
		mergePages(pages, []byte("t\x00c00297"))
	}
}

// benchGet measures GET of one 4 KB context through the router's HTTP
// stack, with the cache on (hits) or off (each GET goes to a shard daemon
// over HTTP).
func benchGet(b *testing.B, cacheBytes int64) {
	tc := newTestCluster(b, clusterOpts{cacheBytes: cacheBytes})
	tc.createTopic(b, "t")
	d := doc4K("")
	const keys = 1000
	for i := range keys {
		tc.putContext(b, "t", fmt.Sprintf("c%d", i), map[string]any{"metadata": map[string]any{"tags": d.Metadata.Tags}, "content": d.Content})
	}
	urls := make([]string, keys)
	for i := range urls {
		urls[i] = fmt.Sprintf("%s/api/v1/topics/t/contexts/c%d", tc.URL, i)
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			resp, err := hc.Get(urls[i%keys])
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("GET = %d", resp.StatusCode)
				return
			}
			i++
		}
	})
}

func BenchmarkRouterGetCacheHit(b *testing.B)  { benchGet(b, 64<<20) }
func BenchmarkRouterGetCacheMiss(b *testing.B) { benchGet(b, 0) }

// BenchmarkRouterPut measures PUT of a 4 KB context through the router's
// HTTP stack to three shard daemons (BoltDB without fsync: this measures
// the router's own cost).
func BenchmarkRouterPut(b *testing.B) {
	tc := newTestCluster(b, clusterOpts{})
	tc.createTopic(b, "t")
	d := doc4K("")
	body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"tags": d.Metadata.Tags}, "content": d.Content})
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1) % 1000
			req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/api/v1/topics/t/contexts/c%d", tc.URL, i), bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 && resp.StatusCode != 201 {
				b.Errorf("PUT = %d", resp.StatusCode)
				return
			}
		}
	})
}
