package kwindex

import (
	"math"
	"slices"
	"testing"
)

func TestAnalyze(t *testing.T) {
	tests := []struct {
		text string
		want []string
	}{
		{"Bob's dogs are RUNNING to the parks", []string{"bob", "dog", "run", "park"}},
		{"the and of", []string{}},
		{"", nil},
		{"Order #A-1234, shipped.", []string{"order", "1234", "ship"}},
	}
	for _, tc := range tests {
		got := Analyze(tc.text)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Analyze(%q) = %q, want %q", tc.text, got, tc.want)
		}
	}
}

func TestQueryTermsDistinct(t *testing.T) {
	if got, want := QueryTerms("runs running run dogs"), []string{"run", "dog"}; !slices.Equal(got, want) {
		t.Errorf("QueryTerms = %q, want %q", got, want)
	}
}

func TestScore(t *testing.T) {
	// A rarer term weighs more; a longer document scores less for the same tf.
	if IDF(100, 1) <= IDF(100, 50) {
		t.Errorf("IDF(100, 1) = %v <= IDF(100, 50) = %v", IDF(100, 1), IDF(100, 50))
	}
	if IDF(10, 10) <= 0 || IDF(10, 20) <= 0 {
		t.Errorf("IDF of a term in every document = %v, %v, want > 0", IDF(10, 10), IDF(10, 20))
	}
	idf := IDF(1000, 10)
	if Score(idf, 1, 5, 10) <= Score(idf, 1, 20, 10) {
		t.Errorf("Score for a short document <= for a long one")
	}
	// tf = 1 at the average length gives exactly idf.
	if got := Score(idf, 1, 10, 10); math.Abs(got-idf) > 1e-12 {
		t.Errorf("Score(idf, 1, avgdl, avgdl) = %v, want idf %v", got, idf)
	}
}
