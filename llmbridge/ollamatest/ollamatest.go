// Package ollamatest is a fake Ollama server for tests. It speaks Ollama's
// wire format as the real server writes it: compact JSON lines
// (application/x-ndjson) flushed one at a time, a last line with done and
// done_reason and durations in nanoseconds, prompt_eval_count and
// eval_count, {"error":"…"} bodies, 404 for a model it does not have.
//
// Its answers are deterministic. A chat answers Reply(request) in pieces of
// one word; an embedding is Embed(text, dim), a hashed bag of words,
// L2-normalised, so texts that share words score higher. It records every
// request (headers included) for assertions and reports a malformed one
// with t.Errorf.
package ollamatest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/ollama/ollama/api"
)

// Version is what /api/version answers.
const Version = "0.17.4"

// Models the server holds unless told otherwise: two chat models and two
// embedding models of different dimensions.
var DefaultModels = map[string]int{
	"chat-model":    0,
	"summary-model": 0,
	"embed-a":       64,
	"embed-b":       32,
}

// Request is one request the server received.
type Request struct {
	Method, Path string
	// Query is the raw query string, Header what arrived with the request.
	Query  string
	Header http.Header
	Body   []byte
	// Ended is set when the server is done with the request; Finished
	// then says whether its answer ran to the end (false: the client went
	// away first).
	Ended, Finished bool
}

// Server is a running fake Ollama.
type Server struct {
	URL string
	srv *httptest.Server
	t   testing.TB

	mu        sync.Mutex // guards the fields below
	models    map[string]int
	requests  []*Request
	down      bool
	delay     time.Duration
	gap       time.Duration
	failAfter int
	reply     func(api.ChatRequest) string
}

// New starts a fake Ollama with DefaultModels; it is closed on cleanup.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, models: map[string]int{}}
	for m, d := range DefaultModels {
		s.models[m] = d
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	t.Cleanup(s.Close)
	return s
}

// Close stops the server.
func (s *Server) Close() {
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// AddModel adds a model; dim 0 makes a chat model, else an embedding model
// of that dimension.
func (s *Server) AddModel(name string, dim int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.models[name] = dim
}

// SetDown makes the server drop every connection without an answer, as a
// crashed server would, until SetDown(false).
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// SetDelay makes the server wait d before it answers anything.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SetGap makes the server wait d between the pieces of a streamed answer.
func (s *Server) SetGap(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gap = d
}

// SetFailAfter makes streamed answers end with an error line after n
// pieces; 0 turns it off.
func (s *Server) SetFailAfter(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failAfter = n
}

// SetReply replaces how chats are answered; nil restores Reply.
func (s *Server) SetReply(fn func(api.ChatRequest) string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reply = fn
}

// Requests returns the requests received on path ("" for all), in order.
func (s *Server) Requests(path string) []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Request
	for _, r := range s.requests {
		if path == "" || r.Path == path {
			out = append(out, *r)
		}
	}
	return out
}

// ChatRequests decodes the requests received on /api/chat.
func (s *Server) ChatRequests() []api.ChatRequest {
	var out []api.ChatRequest
	for _, r := range s.Requests("/api/chat") {
		var req api.ChatRequest
		if err := json.Unmarshal(r.Body, &req); err != nil {
			s.t.Errorf("ollamatest: recorded chat request %s does not decode: %v", r.Body, err)
			continue
		}
		out = append(out, req)
	}
	return out
}

// Reply is the default answer to a chat: "You said: " and the last user
// message, or, when the system message asks for a summary, "Summary: " and
// the words of every user message.
func Reply(req api.ChatRequest) string {
	var last string
	for _, m := range req.Messages {
		if m.Role == "user" {
			last = m.Content
		}
	}
	if len(req.Messages) > 0 && req.Messages[0].Role == "system" && strings.Contains(strings.ToLower(req.Messages[0].Content), "summar") {
		return "Summary: " + strings.Join(strings.Fields(last), " ")
	}
	return "You said: " + last
}

// Tokens is how the fake counts tokens: one per word and four per message.
func Tokens(msgs []api.Message) int {
	n := 0
	for _, m := range msgs {
		n += 4 + len(strings.Fields(m.Content))
	}
	return n
}

// Words splits text as Embed does: lower-case runs of letters and digits.
func Words(text string) []string {
	return strings.FieldsFunc(strings.ToLower(text), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
}

// Embed is the fake's embedding of text: each word adds ±1 at a position
// chosen by its hash, and the vector is L2-normalised. A text without words
// embeds as the first unit vector.
func Embed(text string, dim int) []float32 {
	v := make([]float64, dim)
	for _, w := range Words(text) {
		h := fnv.New64a()
		h.Write([]byte(w))
		x := h.Sum64()
		sign := 1.0
		if x>>63 == 1 {
			sign = -1
		}
		v[x%uint64(dim)] += sign
	}
	var n float64
	for _, f := range v {
		n += f * f
	}
	out := make([]float32, dim)
	if n == 0 {
		out[0] = 1
		return out
	}
	n = math.Sqrt(n)
	for i, f := range v {
		out[i] = float32(f / n)
	}
	return out
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec := &Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body}
	s.mu.Lock()
	s.requests = append(s.requests, rec)
	down, delay := s.down, s.delay
	s.mu.Unlock()
	if down {
		s.mu.Lock()
		rec.Ended = true
		s.mu.Unlock()
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	if !sleep(r, delay) {
		s.mu.Lock()
		rec.Ended = true
		s.mu.Unlock()
		return
	}
	finished := true
	switch {
	case r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "Ollama is running")
	case r.URL.Path == "/api/version" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]string{"version": Version})
	case r.URL.Path == "/api/tags" && r.Method == http.MethodGet:
		s.tags(w)
	case r.URL.Path == "/api/ps" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, api.ProcessResponse{Models: []api.ProcessModelResponse{}})
	case r.URL.Path == "/api/show" && r.Method == http.MethodPost:
		s.show(w, body)
	case r.URL.Path == "/api/embed" && r.Method == http.MethodPost:
		s.embed(w, body)
	case r.URL.Path == "/api/embeddings" && r.Method == http.MethodPost:
		s.embeddings(w, body)
	case r.URL.Path == "/api/chat" && r.Method == http.MethodPost:
		finished = s.chat(w, r, body)
	case r.URL.Path == "/api/generate" && r.Method == http.MethodPost:
		finished = s.generate(w, r, body)
	default:
		// gin's answer to an unknown route
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, "404 page not found")
	}
	s.mu.Lock()
	rec.Ended, rec.Finished = true, finished
	s.mu.Unlock()
}

// sleep waits d unless the client leaves first; it reports whether to go on.
func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	select {
	case <-time.After(d):
		return true
	case <-r.Context().Done():
		return false
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// decode reads a request body as Ollama does; a body Ollama would refuse
// is also a test failure, since the code under test should never send one.
func (s *Server) decode(w http.ResponseWriter, body []byte, v any) bool {
	if err := json.Unmarshal(body, v); err != nil {
		s.t.Errorf("ollamatest: request body %q does not decode: %v", body, err)
		writeError(w, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

// model looks a model up and answers the error Ollama would when it is
// missing or of the wrong kind.
func (s *Server) model(w http.ResponseWriter, name string, embedding bool) (dim int, ok bool) {
	if name == "" {
		writeError(w, http.StatusBadRequest, "model is required")
		return 0, false
	}
	s.mu.Lock()
	dim, found := s.models[strings.TrimSuffix(name, ":latest")]
	s.mu.Unlock()
	switch {
	case !found:
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q not found, try pulling it first", name))
		return 0, false
	case embedding && dim == 0:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%q does not support embeddings", name))
		return 0, false
	case !embedding && dim > 0:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%q does not support chat", name))
		return 0, false
	}
	return dim, true
}

func (s *Server) tags(w http.ResponseWriter) {
	s.mu.Lock()
	names := make([]string, 0, len(s.models))
	for m := range s.models {
		names = append(names, m)
	}
	s.mu.Unlock()
	slices.Sort(names)
	var resp api.ListResponse
	for _, n := range names {
		resp.Models = append(resp.Models, api.ListModelResponse{
			Name: n + ":latest", Model: n + ":latest", ModifiedAt: time.Unix(1700000000, 0).UTC(),
			Size: 1 << 20, Digest: fmt.Sprintf("%064x", fnv.New64a().Sum64()),
			Details: api.ModelDetails{Format: "gguf", Family: "fake", ParameterSize: "1M", QuantizationLevel: "Q4_0"},
		})
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) show(w http.ResponseWriter, body []byte) {
	var req api.ShowRequest
	if !s.decode(w, body, &req) {
		return
	}
	name := req.Model
	if name == "" {
		name = req.Name //lint:ignore SA1019 older clients send the model as "name"; the real server accepts it too
	}
	s.mu.Lock()
	dim, ok := s.models[strings.TrimSuffix(name, ":latest")]
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", name))
		return
	}
	caps := []string{"completion"}
	if dim > 0 {
		caps = []string{"embedding"}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"modelfile":    "FROM " + name,
		"parameters":   "num_ctx 4096",
		"template":     "{{ .Prompt }}",
		"details":      api.ModelDetails{Format: "gguf", Family: "fake", ParameterSize: "1M", QuantizationLevel: "Q4_0"},
		"model_info":   map[string]any{"general.architecture": "fake", "fake.context_length": 4096, "fake.embedding_length": dim},
		"capabilities": caps,
	})
}

func (s *Server) embed(w http.ResponseWriter, body []byte) {
	var req api.EmbedRequest
	if !s.decode(w, body, &req) {
		return
	}
	dim, ok := s.model(w, req.Model, true)
	if !ok {
		return
	}
	var inputs []string
	switch in := req.Input.(type) {
	case string:
		inputs = []string{in}
	case []any:
		for _, x := range in {
			str, ok := x.(string)
			if !ok {
				writeError(w, http.StatusBadRequest, "invalid input type")
				return
			}
			inputs = append(inputs, str)
		}
	case nil:
	default:
		writeError(w, http.StatusBadRequest, "invalid input type")
		return
	}
	resp := api.EmbedResponse{Model: req.Model, Embeddings: [][]float32{}, TotalDuration: 2 * time.Millisecond, LoadDuration: time.Millisecond}
	for _, in := range inputs {
		resp.Embeddings = append(resp.Embeddings, Embed(in, dim))
		resp.PromptEvalCount += len(Words(in))
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) embeddings(w http.ResponseWriter, body []byte) {
	var req api.EmbeddingRequest
	if !s.decode(w, body, &req) {
		return
	}
	dim, ok := s.model(w, req.Model, true)
	if !ok {
		return
	}
	v := Embed(req.Prompt, dim)
	resp := api.EmbeddingResponse{Embedding: make([]float64, dim)}
	for i, f := range v {
		resp.Embedding[i] = float64(f)
	}
	writeJSON(w, http.StatusOK, resp)
}

// pieces splits an answer into the chunks a stream sends: one word each,
// with the space that follows it.
func pieces(answer string) []string {
	var out []string
	for answer != "" {
		i := strings.IndexByte(answer, ' ')
		if i < 0 {
			out = append(out, answer)
			break
		}
		out = append(out, answer[:i+1])
		answer = answer[i+1:]
	}
	return out
}

// streamer writes NDJSON lines and flushes each one.
type streamer struct {
	w       http.ResponseWriter
	started bool
}

func (st *streamer) line(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	if !st.started {
		st.w.Header().Set("Content-Type", "application/x-ndjson")
		st.w.WriteHeader(http.StatusOK)
		st.started = true
	}
	st.w.Write(append(b, '\n'))
	if f, ok := st.w.(http.Flusher); ok {
		f.Flush()
	}
}

func metrics(prompt, eval int) api.Metrics {
	return api.Metrics{
		TotalDuration: time.Duration(10+eval) * time.Millisecond, LoadDuration: time.Millisecond,
		PromptEvalCount: prompt, PromptEvalDuration: time.Duration(prompt) * 100 * time.Microsecond,
		EvalCount: eval, EvalDuration: time.Duration(eval) * time.Millisecond,
	}
}

// answer streams or returns the pieces of an answer; build makes the
// response object of one piece (done=false) or the last (done=true, with
// the whole text when not streaming). It reports whether the answer ended.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, stream bool, ps []string, build func(content string, done bool) any) bool {
	s.mu.Lock()
	gap, failAfter := s.gap, s.failAfter
	s.mu.Unlock()
	if !stream {
		if failAfter > 0 {
			writeError(w, http.StatusInternalServerError, "model runner has unexpectedly stopped")
			return true
		}
		writeJSON(w, http.StatusOK, build(strings.Join(ps, ""), true))
		return true
	}
	st := &streamer{w: w}
	for i, p := range ps {
		if i > 0 && !sleep(r, gap) {
			return false
		}
		if failAfter > 0 && i == failAfter {
			st.line(map[string]string{"error": "model runner has unexpectedly stopped, this may be due to resource limitations"})
			return true
		}
		st.line(build(p, false))
		if r.Context().Err() != nil {
			return false
		}
	}
	st.line(build("", true))
	return true
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request, body []byte) bool {
	var req api.ChatRequest
	if !s.decode(w, body, &req) {
		return true
	}
	if _, ok := s.model(w, req.Model, false); !ok {
		return true
	}
	s.mu.Lock()
	reply := s.reply
	s.mu.Unlock()
	if reply == nil {
		reply = Reply
	}
	ps := pieces(reply(req))
	prompt := Tokens(req.Messages)
	stream := req.Stream == nil || *req.Stream
	return s.answer(w, r, stream, ps, func(content string, done bool) any {
		resp := api.ChatResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Message: api.Message{Role: "assistant", Content: content}, Done: done}
		if done {
			resp.DoneReason = "stop"
			resp.Metrics = metrics(prompt, len(ps))
		}
		return resp
	})
}

func (s *Server) generate(w http.ResponseWriter, r *http.Request, body []byte) bool {
	var req api.GenerateRequest
	if !s.decode(w, body, &req) {
		return true
	}
	if _, ok := s.model(w, req.Model, false); !ok {
		return true
	}
	ps := pieces("You said: " + req.Prompt)
	prompt := Tokens([]api.Message{{Role: "system", Content: req.System}, {Role: "user", Content: req.Prompt}})
	stream := req.Stream == nil || *req.Stream
	return s.answer(w, r, stream, ps, func(content string, done bool) any {
		resp := api.GenerateResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Response: content, Done: done}
		if done {
			resp.DoneReason = "stop"
			resp.Context = []int{1, 2, 3}
			resp.Metrics = metrics(prompt, len(ps))
		}
		return resp
	})
}

// DecodeLines splits an NDJSON body into its lines, failing on any line
// that is not one compact JSON object.
func DecodeLines(t testing.TB, body []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Errorf("line %q is not a JSON object: %v", line, err)
			continue
		}
		var compact bytes.Buffer
		json.Compact(&compact, line)
		if !bytes.Equal(compact.Bytes(), line) {
			t.Errorf("line %q is not compact JSON", line)
		}
		out = append(out, m)
	}
	return out
}
