package memory

import (
	"math"
	"sync"
	"unicode/utf8"

	"github.com/go-kvdb/go-kvdb/llmbridge"
)

// MessageOverhead is what a message costs beside its text: the role and
// the template's markers, in tokens.
const MessageOverhead = 4

// EstimateTokens guesses the tokens of s: about four characters a token
// for English text with the tokenizers of current models.
func EstimateTokens(s string) int { return (utf8.RuneCountInString(s) + 3) / 4 }

// EstimateMessages guesses the tokens of msgs: each one's text and its
// MessageOverhead.
func EstimateMessages(msgs []llmbridge.Message) int {
	n := 0
	for _, m := range msgs {
		n += MessageOverhead + EstimateTokens(m.Content)
	}
	return n
}

// Calibrator corrects the estimates per model by what the model server
// counted (Ollama's prompt_eval_count) for the model's past prompts. The
// zero value knows no model and is ready; one Calibrator serves any number
// of goroutines. It keeps one number per model it has learnt.
type Calibrator struct {
	mu     sync.RWMutex
	ratios map[string]float64 // model → tokens counted per token estimated; guarded by mu
}

// Count estimates what msgs cost on model.
func (c *Calibrator) Count(model string, msgs []llmbridge.Message) int {
	return c.Scale(model, EstimateMessages(msgs))
}

// Scale corrects an estimate for model; it is unchanged until the model
// has been learnt.
func (c *Calibrator) Scale(model string, estimate int) int {
	if r, ok := c.Ratio(model); ok {
		return int(math.Ceil(float64(estimate) * r))
	}
	return estimate
}

// Ratio is how many tokens model counts per token estimated, and whether
// it has been learnt.
func (c *Calibrator) Ratio(model string) (float64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	r, ok := c.ratios[model]
	return r, ok
}

// Learn learns how model counts from a prompt it evaluated: msgs, of which
// it counted counted tokens. The ratio is bounded to 0.25..4 and averaged
// with the one learnt before, so one odd answer moves it little. A count
// or an estimate of zero teaches nothing.
func (c *Calibrator) Learn(model string, msgs []llmbridge.Message, counted int) {
	est := EstimateMessages(msgs)
	if counted <= 0 || est <= 0 {
		return
	}
	ratio := min(4, max(0.25, float64(counted)/float64(est)))
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.ratios[model]; ok {
		ratio = (old + ratio) / 2
	}
	if c.ratios == nil {
		c.ratios = make(map[string]float64)
	}
	c.ratios[model] = ratio
}
