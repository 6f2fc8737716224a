package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// llmBuckets span a cached embedding (milliseconds) to a long generation.
var llmBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// LLM holds the router's metrics of its work with Ollama.
type LLM struct {
	// Requests counts calls to Ollama by operation (embed, chat, summary,
	// proxy_chat, proxy), model and outcome (ok, error).
	Requests *prometheus.CounterVec
	// Duration is the latency of calls to Ollama by operation and model,
	// to the end of a streamed answer.
	Duration *prometheus.HistogramVec
	// Tokens counts tokens by model and direction: in (prompt_eval_count)
	// and out (eval_count), as Ollama reports them.
	Tokens *prometheus.CounterVec
	// EmbedBacklog is the number of contexts waiting to be embedded, as
	// the last retry pass found them.
	EmbedBacklog prometheus.Gauge
	// SearchDuration is the latency of searches by mode (vector, keyword,
	// hybrid), embedding of the query included.
	SearchDuration *prometheus.HistogramVec
}

// NewLLM registers the LLM metrics on reg.
func NewLLM(reg prometheus.Registerer) *LLM {
	m := &LLM{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "ollama", Name: "requests_total",
			Help: "Calls from the router to Ollama, by operation, model and outcome.",
		}, []string{"op", "model", "outcome"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "ollama", Name: "request_duration_seconds",
			Help:    "Latency of calls from the router to Ollama, to the end of the answer, by operation and model.",
			Buckets: llmBuckets,
		}, []string{"op", "model"}),
		Tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "ollama", Name: "tokens_total",
			Help: "Tokens Ollama reported, by model and direction (in: prompt, out: generated).",
		}, []string{"model", "direction"}),
		EmbedBacklog: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "ollama", Name: "embedding_backlog",
			Help: "Contexts stored without the embedding Ollama could not make at write time, as the last retry pass counted them.",
		}),
		SearchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "search", Name: "duration_seconds",
			Help:    "Latency of searches by mode (vector, keyword, hybrid), embedding of the query included.",
			Buckets: latencyBuckets,
		}, []string{"mode"}),
	}
	reg.MustRegister(m.Requests, m.Duration, m.Tokens, m.EmbedBacklog, m.SearchDuration)
	return m
}

// Observe records one call to Ollama.
func (m *LLM) Observe(op, model string, start time.Time, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.Requests.WithLabelValues(op, model, outcome).Inc()
	m.Duration.WithLabelValues(op, model).Observe(time.Since(start).Seconds())
}

// AddTokens records the tokens of one answer.
func (m *LLM) AddTokens(model string, in, out int) {
	if in > 0 {
		m.Tokens.WithLabelValues(model, "in").Add(float64(in))
	}
	if out > 0 {
		m.Tokens.WithLabelValues(model, "out").Add(float64(out))
	}
}
