package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"
)

// Packaged English text the corpus is made from: the fortunes of Debian's
// fortunes-min (short quips, the nearest thing to chat), then the licence
// texts every Debian system ships in base-files. Sentences are what the
// documents are built from, so they compress like English, not like random
// words.
var corpusSources = []string{
	"/usr/share/games/fortunes/fortunes",
	"/usr/share/games/fortunes/literature",
	"/usr/share/games/fortunes/riddles",
	"/usr/share/common-licenses/GPL-3",
	"/usr/share/common-licenses/Apache-2.0",
	"/usr/share/common-licenses/MPL-2.0",
	"/usr/share/common-licenses/Artistic",
	"/usr/share/common-licenses/GFDL-1.3",
	"/usr/share/common-licenses/LGPL-2.1",
}

// corpus is a bag of English sentences.
type corpus struct {
	sentences []string
	fortunes  int    // sentences[:fortunes] are fortunes-min's; 0 without it
	source    string // what it was made from, for the report
}

func loadCorpus() *corpus {
	c := &corpus{}
	var used []string
	for _, path := range corpusSources {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		n := len(c.sentences)
		text := string(b)
		if strings.Contains(path, "fortunes") {
			text = strings.ReplaceAll(text, "\n%\n", "\n\n")
		}
		for para := range strings.SplitSeq(text, "\n\n") {
			c.sentences = append(c.sentences, splitSentences(strings.Join(strings.Fields(para), " "))...)
		}
		if len(c.sentences) > n {
			used = append(used, filepath.Base(path))
		}
		if strings.Contains(path, "fortunes") { // listed first
			c.fortunes = len(c.sentences)
		}
	}
	if len(c.sentences) < 200 {
		c.sentences = append(c.sentences, generatedSentences(2000)...)
		used = append(used, "generated sentences")
	}
	c.source = strings.Join(used, ", ")
	return c
}

// splitSentences cuts a paragraph after '.', '?' or '!' followed by a
// space, keeping sentences of a readable length.
func splitSentences(p string) []string {
	var out []string
	start := 0
	for i := 0; i+1 < len(p); i++ {
		if (p[i] == '.' || p[i] == '?' || p[i] == '!') && p[i+1] == ' ' {
			out = appendSentence(out, p[start:i+1])
			start = i + 2
		}
	}
	return appendSentence(out, p[start:])
}

func appendSentence(out []string, s string) []string {
	s = strings.TrimSpace(s)
	if len(s) < 16 || len(s) > 400 || !utf8.ValidString(s) {
		return out
	}
	return append(out, s)
}

// generatedSentences is the fallback when no packaged text is found.
func generatedSentences(n int) []string {
	subjects := []string{"The user", "The assistant", "Our cluster", "The report", "A customer", "The model", "The team", "This service"}
	verbs := []string{"asked about", "explained", "summarised", "rejected", "compared", "documented", "migrated", "reviewed"}
	objects := []string{"the billing history", "a failed deployment", "the latest invoice", "the support ticket", "an outage last week", "the quarterly numbers", "a new API key", "the shipping address"}
	tails := []string{"before lunch.", "in some detail.", "without much context.", "for the second time.", "and asked for a follow-up.", "with a short example.", "as requested.", "after a long pause."}
	r := rand.New(rand.NewPCG(1, 2))
	out := make([]string, n)
	for i := range out {
		out[i] = strings.Join([]string{subjects[r.IntN(len(subjects))], verbs[r.IntN(len(verbs))], objects[r.IntN(len(objects))], tails[r.IntN(len(tails))]}, " ")
	}
	return out
}

// paragraph joins n distinct random sentences.
func (c *corpus) paragraph(r *rand.Rand, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(c.sentences[r.IntN(len(c.sentences))])
	}
	return b.String()
}

// fortuneText is two sentences of the fortunes for seed (of the whole
// corpus without fortunes-min): the words of a searched context.
func (c *corpus) fortuneText(seed uint64) string {
	pool := c.sentences
	if c.fortunes >= 200 {
		pool = c.sentences[:c.fortunes]
	}
	r := rand.New(rand.NewPCG(seed, 0x666f7274))
	return pool[r.IntN(len(pool))] + " " + pool[r.IntN(len(pool))]
}

// The documents, in the API's JSON shape.
type metadata struct {
	ID        string   `json:"id,omitempty"`
	CreatedAt string   `json:"created_at,omitempty"`
	Model     string   `json:"model,omitempty"`
	Tags      []string `json:"tags,omitempty"`
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type content struct {
	Text       string    `json:"text,omitempty"`
	Messages   []message `json:"messages,omitempty"`
	Embeddings []float32 `json:"embeddings,omitempty"`
}

type document struct {
	Metadata metadata `json:"metadata"`
	Content  content  `json:"content"`
}

var (
	models = []string{"llama3.1:8b", "mistral:7b", "qwen2.5:7b", "gemma2:9b"}
	tags   = []string{"chat", "support", "billing", "onboarding", "research", "draft", "internal", "escalated"}
	epoch  = time.Date(2025, 1, 6, 9, 0, 0, 0, time.UTC)
)

// newChat makes a conversation: a short summary in text, then turns of a
// user and an assistant. seed makes it reproducible.
func (c *corpus) newChat(seed uint64, id string, turns int) document {
	r := rand.New(rand.NewPCG(seed, 0x6b766462))
	d := document{
		Metadata: metadata{
			ID:        id,
			CreatedAt: epoch.Add(time.Duration(seed) * time.Second).Format(time.RFC3339),
			Model:     models[r.IntN(len(models))],
			Tags:      []string{tags[r.IntN(len(tags))], tags[r.IntN(len(tags))]},
		},
		Content: content{Text: c.paragraph(r, 2)},
	}
	if d.Metadata.Tags[0] == d.Metadata.Tags[1] {
		d.Metadata.Tags = d.Metadata.Tags[:1]
	}
	d.Content.Messages = append(d.Content.Messages, message{Role: "system", Content: "You are a helpful assistant. Answer briefly and cite the conversation when you can."})
	for i := range turns {
		role := "user"
		n := 1 + r.IntN(2)
		if i%2 == 1 {
			role, n = "assistant", 2+r.IntN(4)
		}
		d.Content.Messages = append(d.Content.Messages, message{Role: role, Content: c.paragraph(r, n)})
	}
	return d
}

// doc4K makes a chat document whose JSON is between size-128 and size
// bytes: turns are added until it is long enough, then the last turn is
// cut at a word.
func (c *corpus) doc4K(seed uint64, id string, size int) []byte {
	d := c.newChat(seed, id, 2)
	r := rand.New(rand.NewPCG(seed, 7))
	for {
		b := mustJSON(&d)
		if len(b) >= size-128 {
			break
		}
		role := "user"
		if len(d.Content.Messages)%2 == 0 {
			role = "assistant"
		}
		d.Content.Messages = append(d.Content.Messages, message{Role: role, Content: c.paragraph(r, 1+r.IntN(4))})
	}
	for {
		b := mustJSON(&d)
		if len(b) <= size {
			return b
		}
		last := &d.Content.Messages[len(d.Content.Messages)-1]
		cut := len(last.Content) - (len(b) - size) - 1
		if cut < 1 {
			d.Content.Messages = d.Content.Messages[:len(d.Content.Messages)-1]
			continue
		}
		if i := strings.LastIndexByte(last.Content[:cut], ' '); i > 0 {
			cut = i
		}
		for cut > 0 && !utf8.RuneStart(last.Content[cut]) {
			cut--
		}
		last.Content = last.Content[:cut] + "."
	}
}

// withEmbedding makes a short document with a dims-long embedding whose
// values look like a normalised sentence embedding's.
func (c *corpus) withEmbedding(seed uint64, id string, dims int, embed bool) []byte {
	r := rand.New(rand.NewPCG(seed, 768))
	d := document{
		Metadata: metadata{ID: id, CreatedAt: epoch.Add(time.Duration(seed) * time.Second).Format(time.RFC3339), Model: "nomic-embed-text"},
		Content:  content{Text: c.paragraph(r, 2)},
	}
	if embed {
		d.Content.Embeddings = make([]float32, dims)
		for i := range d.Content.Embeddings {
			d.Content.Embeddings[i] = float32(r.NormFloat64() / 27.7) // unit norm at 768 dims
		}
	}
	return mustJSON(&d)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", v, err))
	}
	return b
}
