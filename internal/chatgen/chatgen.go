// Package chatgen makes deterministic chat contexts for tests and
// benchmarks: the same seed gives the same conversation, so compression
// figures and stored sizes are comparable from run to run.
package chatgen

import (
	"encoding/json"
	mrand "math/rand/v2"
	"strings"

	"github.com/go-kvdb/go-kvdb/router/schema"
)

var words = strings.Fields(`the cluster router shard replica context topic message assistant user
model answer question refund invoice charge account password reset order delivery ticket support
billing please thanks could would should customer twice monthly plan upgrade cancel receipt email
address card declined payment pending warehouse courier tracking number weekend tomorrow`)

// Body is a chat-like content object: a system prompt and a few turns
// of sentences from a small vocabulary, different for every seed.
func Body(seed int) map[string]any {
	r := mrand.New(mrand.NewPCG(uint64(seed), 7))
	sentence := func() string {
		n := 6 + r.IntN(10)
		w := make([]string, n)
		for i := range w {
			w[i] = words[r.IntN(len(words))]
		}
		return strings.ToUpper(w[0][:1]) + strings.Join(w, " ")[1:] + "."
	}
	msgs := []map[string]string{{"role": "system", "content": "You are a helpful support assistant. Answer briefly, politely, and cite the conversation when you can."}}
	for i := range 4 + r.IntN(8) {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		var parts []string
		for range 1 + r.IntN(3) {
			parts = append(parts, sentence())
		}
		msgs = append(msgs, map[string]string{"role": role, "content": strings.Join(parts, " ")})
	}
	return map[string]any{"text": sentence(), "messages": msgs}
}

// Doc4K is a context document of about 4 KB of JSON, like the benchmark
// suite's.
func Doc4K(id string) *schema.Document {
	return &schema.Document{
		Metadata: schema.Metadata{ID: id, CreatedAt: "2024-03-20T10:00:00Z", Model: "llama2", Tags: []string{"chat", "support"}},
		Content:  schema.Content{Text: strings.Repeat("User asked how to rotate the keys of the cluster; assistant explained the steps. ", 50)[:3900]},
	}
}

// Bodies is n Body JSONs, of seeds from, from+1, …: training samples.
func Bodies(from, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i], _ = json.Marshal(Body(from + i))
	}
	return out
}
