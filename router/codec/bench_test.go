package codec

import (
	"encoding/json"
	"testing"

	"github.com/go-kvdb/go-kvdb/internal/chatgen"
	"github.com/go-kvdb/go-kvdb/router/schema"
)

func BenchmarkCodecEncode(b *testing.B) {
	c, _ := New(Options{})
	d := chatgen.Doc4K("bench")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.EncodeDocument(d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCodecRender(b *testing.B) {
	c, _ := New(Options{})
	stored, _ := c.EncodeDocument(chatgen.Doc4K("bench"))
	buf := make([]byte, 0, 8192)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.AppendDocumentJSON(buf[:0], stored, true); err != nil {
			b.Fatal(err)
		}
	}
}

// chatDoc4K is a chat context of about 4 KB of JSON made of chatBody
// turns, the kind a trained dictionary is for.
func chatDoc4K() *schema.Document {
	d := &schema.Document{Metadata: schema.Metadata{ID: "bench", CreatedAt: "2024-03-20T10:00:00Z", Model: "llama3", Tags: []string{"chat"}}}
	for seed := 0; len(d.Content.Messages) < 30; seed++ {
		raw, _ := json.Marshal(chatgen.Body(seed))
		var c schema.Content
		json.Unmarshal(raw, &c)
		d.Content.Messages = append(d.Content.Messages, c.Messages[1:]...)
	}
	return d
}

// dictCodecs returns a codec without a dictionary and one with a
// dictionary trained on other chat bodies.
func dictCodecs(b *testing.B) map[string]*Codec {
	plain, _ := New(Options{})
	withDict, _ := New(Options{})
	const id = 77_777
	if err := withDict.AddDict(id, testDict(b, id)); err != nil {
		b.Fatal(err)
	}
	withDict.SetCurrent(id)
	return map[string]*Codec{"plain": plain, "dict": withDict}
}

// BenchmarkCodecEncodeChat compares compressing a chat context with plain
// zstd and with a trained dictionary (stored bytes are reported).
func BenchmarkCodecEncodeChat(b *testing.B) {
	d := chatDoc4K()
	for _, name := range []string{"plain", "dict"} {
		c := dictCodecs(b)[name]
		b.Run(name, func(b *testing.B) {
			stored, _ := c.EncodeDocument(d)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.EncodeDocument(d); err != nil {
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
			stored, _ := c.EncodeDocument(d)
			buf := make([]byte, 0, 8192)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.AppendDocumentJSON(buf[:0], stored, true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCodecRenderEmbedding768(b *testing.B) {
	c, _ := New(Options{})
	d := chatgen.Doc4K("bench")
	d.Content.Embeddings = make([]float32, 768)
	for i := range d.Content.Embeddings {
		d.Content.Embeddings[i] = float32(i) / 997
	}
	stored, _ := c.EncodeDocument(d)
	buf := make([]byte, 0, 16384)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.AppendDocumentJSON(buf[:0], stored, true); err != nil {
			b.Fatal(err)
		}
	}
}
