package memory

import (
	"sync"
	"testing"

	"github.com/go-kvdb/go-kvdb/llmbridge"
)

func TestEstimateTokens(t *testing.T) {
	for _, tt := range []struct {
		s    string
		want int
	}{
		{"", 0},
		{"a", 1},
		{"abcd", 1},
		{"abcde", 2},
		{"héllo wörld", 3}, // 11 characters, 13 bytes: characters count
		{"日本語のテキスト", 2},    // 8 characters, 24 bytes
	} {
		if got := EstimateTokens(tt.s); got != tt.want {
			t.Errorf("EstimateTokens(%q) = %d, want %d", tt.s, got, tt.want)
		}
	}
}

func TestEstimateMessages(t *testing.T) {
	for _, tt := range []struct {
		name string
		msgs []llmbridge.Message
		want int
	}{
		{"none", nil, 0},
		{"empty message", []llmbridge.Message{{Role: "user"}}, MessageOverhead},
		{"two", []llmbridge.Message{{Role: "system", Content: "abcdefgh"}, {Role: "user", Content: "abc"}}, 2*MessageOverhead + 2 + 1},
	} {
		if got := EstimateMessages(tt.msgs); got != tt.want {
			t.Errorf("%s: EstimateMessages(%v) = %d, want %d", tt.name, tt.msgs, got, tt.want)
		}
	}
}

func TestCalibrator(t *testing.T) {
	prompt := []llmbridge.Message{{Role: "user", Content: "twelve chars"}} // 4 + 3 = 7 estimated
	type step struct {
		learn     int     // tokens counted for prompt; 0 learns nothing
		wantRatio float64 // 0 when none is learnt
		wantCount int     // Count(prompt) after the step
	}
	for _, tt := range []struct {
		name  string
		steps []step
	}{
		{"unknown model counts the estimate", []step{{0, 0, 7}}},
		{"zero and negative counts teach nothing", []step{{0, 0, 7}, {-5, 0, 7}}},
		{"first answer is taken", []step{{14, 2, 14}}},
		{"later answers are averaged", []step{{14, 2, 14}, {7, 1.5, 11}}},   // ceil(7*1.5)=11
		{"ratio bounded above", []step{{7000, 4, 28}}},                      // 1000 → 4
		{"ratio bounded below", []step{{1, 0.25, 2}}},                       // 1/7 → 0.25, ceil(1.75)=2
		{"bounded before averaging", []step{{7000, 4, 28}, {1, 2.125, 15}}}, // (4+0.25)/2, ceil(14.875)=15
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c Calibrator
			for i, s := range tt.steps {
				c.Learn("m", prompt, s.learn)
				r, ok := c.Ratio("m")
				if ok != (s.wantRatio != 0) || r != s.wantRatio {
					t.Errorf("step %d: Ratio(m) = %v, %v, want %v", i, r, ok, s.wantRatio)
				}
				if got := c.Count("m", prompt); got != s.wantCount {
					t.Errorf("step %d: Count(m) = %d, want %d", i, got, s.wantCount)
				}
			}
			if got := c.Count("other", prompt); got != 7 {
				t.Errorf("Count(other) = %d, want the estimate 7: models are learnt apart", got)
			}
		})
	}
	var c Calibrator
	c.Learn("m", nil, 10)
	if _, ok := c.Ratio("m"); ok {
		t.Errorf("Learn with an empty prompt learnt a ratio")
	}
}

// TestCalibratorConcurrent is for the race detector; and since every
// answer is the same, smoothing must end on that ratio exactly.
func TestCalibratorConcurrent(t *testing.T) {
	prompt := []llmbridge.Message{{Role: "user", Content: "twelve chars"}}
	var c Calibrator
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				c.Learn("m", prompt, 21)
				c.Count("m", prompt)
			}
		})
	}
	wg.Wait()
	if r, ok := c.Ratio("m"); !ok || r != 3 {
		t.Errorf("Ratio(m) = %v, %v, want 3", r, ok)
	}
}
