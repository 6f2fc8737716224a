package kwindex

import (
	"math"
	"strings"

	"github.com/blevesearch/bleve/v2/analysis"
	"github.com/blevesearch/bleve/v2/analysis/lang/en"
	"github.com/blevesearch/bleve/v2/analysis/token/lowercase"
	"github.com/blevesearch/bleve/v2/analysis/token/porter"
	"github.com/blevesearch/bleve/v2/analysis/token/stop"
	"github.com/blevesearch/bleve/v2/analysis/tokenizer/unicode"
)

// BM25 parameters: the textbook values.
const (
	K1 = 1.2
	B  = 0.75
)

// MaxTermLen bounds a term's bytes; longer tokens are dropped.
const MaxTermLen = 64

// analyzer is bleve's "en" analyzer, built from its parts without the
// registry. Its filters keep no state between calls, so one serves all
// goroutines.
var analyzer = func() *analysis.DefaultAnalyzer {
	stops := analysis.NewTokenMap()
	if err := stops.LoadBytes([]byte(en.EnglishStopWords)); err != nil {
		panic(err) // the list is a constant of the library
	}
	return &analysis.DefaultAnalyzer{
		Tokenizer: unicode.NewUnicodeTokenizer(),
		TokenFilters: []analysis.TokenFilter{
			en.NewPossessiveFilter(),
			lowercase.NewLowerCaseFilter(),
			stop.NewStopTokensFilter(stops),
			porter.NewPorterStemmer(),
		},
	}
}()

// Analyze returns the terms of text, in order, repeats included.
func Analyze(text string) []string {
	if text == "" {
		return nil
	}
	toks := analyzer.Analyze([]byte(text))
	terms := make([]string, 0, len(toks))
	for _, t := range toks {
		if len(t.Term) == 0 || len(t.Term) > MaxTermLen || strings.IndexByte(string(t.Term), 0) >= 0 {
			continue
		}
		terms = append(terms, string(t.Term))
	}
	return terms
}

// Doc is a document's analysis: how often each term occurs, and its
// length in terms.
type Doc struct {
	TF  map[string]int
	Len int
}

// NewDoc analyses text into a Doc.
func NewDoc(text string) Doc {
	terms := Analyze(text)
	d := Doc{TF: make(map[string]int, len(terms)), Len: len(terms)}
	for _, t := range terms {
		d.TF[t]++
	}
	return d
}

// QueryTerms are the distinct terms of a query, in their first order.
func QueryTerms(q string) []string {
	var out []string
	seen := map[string]bool{}
	for _, t := range Analyze(q) {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

// IDF is a term's inverse document frequency among n documents, df of
// which hold it. It is positive whatever df.
func IDF(n, df int64) float64 {
	if df > n {
		df = n // statistics summed while copies moved may overshoot
	}
	return math.Log(1 + (float64(n)-float64(df)+0.5)/(float64(df)+0.5))
}

// Score is one term's BM25 contribution to a document that holds it tf
// times and has dl terms, among documents of avgdl terms on average.
func Score(idf float64, tf, dl int, avgdl float64) float64 {
	if avgdl <= 0 {
		avgdl = 1
	}
	f := float64(tf)
	return idf * f * (K1 + 1) / (f + K1*(1-B+B*float64(dl)/avgdl))
}
