// Package openaitest is a fake OpenAI-compatible server for tests. It
// speaks the wire format of OpenAI's API as the real server writes it:
//
//   - POST /v1/chat/completions answers a chat.completion object, or, with
//     "stream": true, server-sent events: "data: {chat.completion.chunk}"
//     lines separated by blank lines and flushed one at a time (a first
//     chunk with the role, one chunk a word, a chunk with finish_reason,
//     a chunk with usage and no choices when stream_options.include_usage
//     is set), then "data: [DONE]".
//   - POST /v1/embeddings answers a list of embedding objects, as float
//     arrays or, with "encoding_format": "base64", as base64 of
//     little-endian float32s.
//   - GET /v1/models and GET /v1/models/{id} answer model objects.
//   - Errors are {"error":{"message","type","param","code"}} with the real
//     statuses: 401 without or with a wrong bearer key (once SetAPIKey is
//     given one), 404 model_not_found, 400 invalid_request_error, 500
//     server_error.
//
// Its answers are those of package ollamatest, so both fakes answer alike:
// a chat answers ollamatest.Reply in pieces of one word, an embedding is
// ollamatest.Embed, tokens are counted by ollamatest.Tokens. It records
// every request (headers included) for assertions, and reports a request
// the real server would refuse as malformed (a body that does not decode,
// an argument the API does not know) with t.Errorf, since the code under
// test should never send one.
package openaitest

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/ollama/ollama/api"
)

// DefaultModels are the models the server holds unless told otherwise,
// those of ollamatest: dimension 0 is a chat model, any other an embedding
// model of that dimension.
var DefaultModels = ollamatest.DefaultModels

// Created is the creation time the fake gives its models and answers.
const Created = 1700000000

// Request is one request the server received.
type Request struct {
	Method, Path string
	Header       http.Header
	Body         []byte
	// Ended is set when the server is done with the request; Finished
	// then says whether its answer ran to the end (false: the client went
	// away first, or the answer was cut on purpose).
	Ended, Finished bool
}

// Message is one message of a chat request, its content flattened to text
// (an array of text parts is joined).
type Message struct {
	Role    string
	Content string
}

// ChatRequest is a decoded POST /v1/chat/completions body: the fields the
// fake acts on, and Raw, the whole body as a map, for assertions on the
// rest.
type ChatRequest struct {
	Model        string
	Messages     []Message
	Stream       bool
	IncludeUsage bool
	MaxTokens    int // max_tokens or max_completion_tokens; 0 when unset
	Raw          map[string]any
}

// Server is a running fake OpenAI-compatible server.
type Server struct {
	// URL is the base URL clients are given: the server's root and /v1.
	URL string
	srv *httptest.Server
	t   testing.TB

	mu       sync.Mutex // guards the fields below
	key      string
	models   map[string]int
	requests []*Request
	down     bool
	delay    time.Duration
	gap      time.Duration
	fail     int
	cut      int
	drop     int
	reply    func(ChatRequest) string
	errCode  int
	errBody  string
	seq      int
}

// New starts a fake server with DefaultModels that accepts any key or none;
// it is closed on cleanup.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, models: map[string]int{}}
	for m, d := range DefaultModels {
		s.models[m] = d
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL + "/v1"
	t.Cleanup(s.Close)
	return s
}

// Close stops the server.
func (s *Server) Close() {
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// SetAPIKey makes the server require "Authorization: Bearer key" on every
// request, as OpenAI does; "" accepts any key or none.
func (s *Server) SetAPIKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.key = key
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

// SetGap makes the server wait d between the events of a streamed answer.
func (s *Server) SetGap(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gap = d
}

// SetFailAfter makes streamed answers send an error event after n pieces
// of text and end there (no [DONE]), and non-streamed ones answer 500;
// 0 turns it off.
func (s *Server) SetFailAfter(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = n
}

// SetCutAfter makes streamed answers end, cleanly at the HTTP level, after
// their first n events, as a proxy that gives up would: the role chunk is
// event 1, each piece of text one more, then the finish_reason chunk, the
// usage chunk (if asked for) and [DONE]. 0 turns it off.
func (s *Server) SetCutAfter(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cut = n
}

// SetError makes every request (once past the key check) answer status
// with body; an empty body is the one OpenAI sends for that status (for
// 502 and 504, the HTML page of the proxy in front of it). 0 turns it off.
func (s *Server) SetError(status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errCode, s.errBody = status, body
}

// writeStatus answers status as OpenAI does, or with body when given one.
func writeStatus(w http.ResponseWriter, status int, body string) {
	if body != "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
		return
	}
	switch status {
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(status)
		fmt.Fprintf(w, "<html>\r\n<head><title>%d %s</title></head>\r\n<body>\r\n<center><h1>%d %s</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n", status, http.StatusText(status), status, http.StatusText(status))
	case http.StatusForbidden:
		writeError(w, status, "request_forbidden", "", "unsupported_country_region_territory", "Country, region, or territory not supported")
	case http.StatusTooManyRequests:
		writeError(w, status, "requests", "", "rate_limit_exceeded", "Rate limit reached for requests")
	case http.StatusInternalServerError:
		writeError(w, status, "server_error", "", "", "The server had an error while processing your request. Sorry about that!")
	case http.StatusServiceUnavailable:
		writeError(w, status, "server_error", "", "", "The server is overloaded or not ready yet.")
	default:
		writeError(w, status, "invalid_request_error", "", "", http.StatusText(status))
	}
}

// SetDropAfter makes streamed answers stop after their first n events
// (counted as for SetCutAfter) and the connection close without the end
// of the HTTP body, as when the server crashes mid-answer. 0 turns it off.
func (s *Server) SetDropAfter(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop = n
}

// SetReply replaces how chats are answered; nil restores Reply.
func (s *Server) SetReply(fn func(ChatRequest) string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reply = fn
}

// Requests returns the requests received on path (as "/v1/embeddings"; ""
// for all), in order.
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

// ChatRequests decodes the requests received on /v1/chat/completions.
func (s *Server) ChatRequests() []ChatRequest {
	var out []ChatRequest
	for _, r := range s.Requests("/v1/chat/completions") {
		req, err := decodeChat(r.Body)
		if err != nil {
			s.t.Errorf("openaitest: recorded chat request %s does not decode: %v", r.Body, err)
			continue
		}
		out = append(out, req)
	}
	return out
}

// Reply is the default answer to a chat: ollamatest.Reply of the same
// messages.
func Reply(req ChatRequest) string {
	return ollamatest.Reply(api.ChatRequest{Model: req.Model, Messages: apiMessages(req.Messages)})
}

// Tokens is how the fake counts a prompt's tokens: ollamatest.Tokens.
func Tokens(msgs []Message) int { return ollamatest.Tokens(apiMessages(msgs)) }

func apiMessages(msgs []Message) []api.Message {
	out := make([]api.Message, len(msgs))
	for i, m := range msgs {
		out[i] = api.Message{Role: m.Role, Content: m.Content}
	}
	return out
}

// Embed is the fake's embedding of text: ollamatest.Embed.
func Embed(text string, dim int) []float32 { return ollamatest.Embed(text, dim) }

// apiError is OpenAI's error object; param and code are null when unset.
type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func ptr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

func writeError(w http.ResponseWriter, status int, typ, param, code, msg string) {
	writeJSON(w, status, map[string]apiError{"error": {Message: msg, Type: typ, Param: ptr(param), Code: ptr(code)}})
}

func invalid(w http.ResponseWriter, param, msg string) {
	writeError(w, http.StatusBadRequest, "invalid_request_error", param, "", msg)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec := &Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
	s.mu.Lock()
	s.requests = append(s.requests, rec)
	s.seq++
	down, delay, key, seq, errCode, errBody := s.down, s.delay, s.key, s.seq, s.errCode, s.errBody
	s.mu.Unlock()
	end := func(finished bool) {
		s.mu.Lock()
		rec.Ended, rec.Finished = true, finished
		s.mu.Unlock()
	}
	defer func() {
		if p := recover(); p != nil {
			end(false)
			panic(p) // http.ErrAbortHandler: drop the connection
		}
	}()
	if down {
		end(false)
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	if !sleep(r, delay) {
		end(false)
		return
	}
	w.Header().Set("X-Request-Id", fmt.Sprintf("req_%016x", seq))
	if key != "" && !s.authorized(w, r, key) {
		end(true)
		return
	}
	if errCode != 0 {
		writeStatus(w, errCode, errBody)
		end(true)
		return
	}
	finished := true
	switch {
	case r.URL.Path == "/v1/chat/completions" && r.Method == http.MethodPost:
		finished = s.chat(w, r, body, seq)
	case r.URL.Path == "/v1/embeddings" && r.Method == http.MethodPost:
		s.embeddings(w, body)
	case r.URL.Path == "/v1/models" && r.Method == http.MethodGet:
		s.listModels(w)
	case strings.HasPrefix(r.URL.Path, "/v1/models/") && r.Method == http.MethodGet:
		s.getModel(w, strings.TrimPrefix(r.URL.Path, "/v1/models/"))
	default:
		// OpenAI's answer to a route it does not have
		writeError(w, http.StatusNotFound, "invalid_request_error", "", "", fmt.Sprintf("Invalid URL (%s %s)", r.Method, r.URL.Path))
	}
	end(finished)
}

// authorized checks the bearer key as OpenAI does, answering 401 when it
// is missing or wrong. The message of a wrong key shows it masked, as
// OpenAI's does.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request, key string) bool {
	h := r.Header.Get("Authorization")
	got, ok := strings.CutPrefix(h, "Bearer ")
	switch {
	case h == "" || !ok:
		writeError(w, http.StatusUnauthorized, "invalid_request_error", "", "",
			"You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
		return false
	case got != key:
		writeError(w, http.StatusUnauthorized, "invalid_request_error", "", "invalid_api_key",
			fmt.Sprintf("Incorrect API key provided: %s. You can find your API key at https://platform.openai.com/account/api-keys.", mask(got)))
		return false
	}
	return true
}

// mask shows a key as OpenAI does: its first three and last four
// characters.
func mask(k string) string {
	if len(k) <= 8 {
		return strings.Repeat("*", len(k))
	}
	return k[:3] + strings.Repeat("*", len(k)-7) + k[len(k)-4:]
}

// sleep waits d unless the client leaves first; it reports whether to go on.
func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// chatArgs are the arguments of POST /v1/chat/completions in OpenAI's API
// reference; any other is refused, as OpenAI refuses it.
var chatArgs = []string{
	"audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
	"max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model", "n",
	"parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key", "reasoning_effort",
	"response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
	"stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user",
	"verbosity", "web_search_options",
}

// embeddingArgs are those of POST /v1/embeddings.
var embeddingArgs = []string{"dimensions", "encoding_format", "input", "model", "user"}

// decodeArgs decodes a body into a map and refuses an argument not in
// known. A failure is the code under test's fault, so it is reported.
func (s *Server) decodeArgs(w http.ResponseWriter, body []byte, known []string) (map[string]any, bool) {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		s.t.Errorf("openaitest: request body %q does not decode: %v", body, err)
		invalid(w, "", "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)")
		return nil, false
	}
	for k := range m {
		if !slices.Contains(known, k) {
			s.t.Errorf("openaitest: request argument %q is not in OpenAI's API (body %s)", k, body)
			invalid(w, k, fmt.Sprintf("Unrecognized request argument supplied: %s", k))
			return nil, false
		}
	}
	return m, true
}

func decodeChat(body []byte) (ChatRequest, error) {
	var wire struct {
		Model    string `json:"model"`
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		Stream        bool `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
		MaxTokens           int `json:"max_tokens"`
		MaxCompletionTokens int `json:"max_completion_tokens"`
	}
	if err := json.Unmarshal(body, &wire); err != nil {
		return ChatRequest{}, err
	}
	req := ChatRequest{Model: wire.Model, Stream: wire.Stream, MaxTokens: wire.MaxCompletionTokens}
	if wire.MaxTokens > 0 {
		req.MaxTokens = wire.MaxTokens
	}
	req.IncludeUsage = wire.StreamOptions != nil && wire.StreamOptions.IncludeUsage
	json.Unmarshal(body, &req.Raw)
	for i, m := range wire.Messages {
		text, err := flatten(m.Content)
		if err != nil {
			return ChatRequest{}, fmt.Errorf("messages[%d].content: %w", i, err)
		}
		req.Messages = append(req.Messages, Message{Role: m.Role, Content: text})
	}
	return req, nil
}

// flatten reads a message's content: a string, null, or an array of parts
// of which the text ones are joined.
func flatten(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", fmt.Errorf("want a string or an array of content parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String(), nil
}

// model looks a model up and answers the error OpenAI would when it is
// missing or of the wrong kind.
func (s *Server) model(w http.ResponseWriter, name string, embedding bool) (dim int, ok bool) {
	if name == "" {
		invalid(w, "model", "you must provide a model parameter")
		return 0, false
	}
	s.mu.Lock()
	dim, found := s.models[name]
	s.mu.Unlock()
	switch {
	case !found:
		writeError(w, http.StatusNotFound, "invalid_request_error", "", "model_not_found",
			fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", name))
		return 0, false
	case embedding && dim == 0:
		invalid(w, "model", fmt.Sprintf("The model `%s` does not support embeddings.", name))
		return 0, false
	case !embedding && dim > 0:
		invalid(w, "model", fmt.Sprintf("This is not a chat model and thus not supported in the v1/chat/completions endpoint: `%s`.", name))
		return 0, false
	}
	return dim, true
}

var roles = []string{"system", "developer", "user", "assistant", "tool", "function"}

func (s *Server) chat(w http.ResponseWriter, r *http.Request, body []byte, seq int) bool {
	args, ok := s.decodeArgs(w, body, chatArgs)
	if !ok {
		return true
	}
	req, err := decodeChat(body)
	if err != nil {
		invalid(w, "messages", err.Error())
		return true
	}
	if _, ok := s.model(w, req.Model, false); !ok {
		return true
	}
	if len(req.Messages) == 0 {
		invalid(w, "messages", "[] is too short - 'messages'")
		return true
	}
	for i, m := range req.Messages {
		if !slices.Contains(roles, m.Role) {
			invalid(w, fmt.Sprintf("messages.[%d].role", i), fmt.Sprintf("Invalid value: '%s'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.", m.Role))
			return true
		}
	}
	if n, ok := args["n"].(float64); ok && n != 1 {
		s.t.Errorf("openaitest: n=%v: the fake answers one choice only", n)
		invalid(w, "n", "the fake answers n=1 only")
		return true
	}
	if args["stream_options"] != nil && !req.Stream {
		invalid(w, "stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		return true
	}
	s.mu.Lock()
	reply, gap, fail, cut, drop := s.reply, s.gap, s.fail, s.cut, s.drop
	s.mu.Unlock()
	if reply == nil {
		reply = Reply
	}
	ps := pieces(reply(req))
	finish := "stop"
	if req.MaxTokens > 0 && len(ps) > req.MaxTokens {
		ps, finish = ps[:req.MaxTokens], "length"
	}
	u := &usage{PromptTokens: Tokens(req.Messages), CompletionTokens: len(ps)}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	head := completion{ID: fmt.Sprintf("chatcmpl-%024d", seq), Object: "chat.completion", Created: Created, Model: req.Model, ServiceTier: "default", SystemFingerprint: "fp_openaitest"}
	if !req.Stream {
		if fail > 0 {
			writeError(w, http.StatusInternalServerError, "server_error", "", "", "The server had an error while processing your request. Sorry about that!")
			return true
		}
		content := strings.Join(ps, "")
		head.Choices = []choice{{Message: &delta{Role: "assistant", Content: &content, Refusal: null, Annotations: json.RawMessage("[]")}, Logprobs: null, FinishReason: &finish}}
		head.Usage = u
		writeJSON(w, http.StatusOK, head)
		return true
	}

	head.Object = "chat.completion.chunk"
	st := &sse{w: w, r: r, gap: gap, cut: cut, drop: drop}
	event := func(d *delta, finish *string) chunk {
		c := chunk{completion: head, Choices: []choice{{Delta: d, Logprobs: null, FinishReason: finish}}}
		if req.IncludeUsage {
			c.Usage = null
		}
		return c
	}
	empty := ""
	if !st.event(event(&delta{Role: "assistant", Content: &empty, Refusal: null}, nil)) {
		return false
	}
	for i, p := range ps {
		if fail > 0 && i == fail {
			st.event(map[string]apiError{"error": {Message: "The server had an error while processing your request. Sorry about that!", Type: "server_error"}})
			return true
		}
		if !st.event(event(&delta{Content: &p}, nil)) {
			return false
		}
	}
	if !st.event(event(&delta{}, &finish)) {
		return false
	}
	if req.IncludeUsage {
		b, _ := json.Marshal(u)
		if !st.event(chunk{completion: head, Choices: []choice{}, Usage: b}) {
			return false
		}
	}
	return st.done()
}

// null is a JSON null that omitempty does not omit.
var null = json.RawMessage("null")

// completion is a chat.completion object, and the head of every
// chat.completion.chunk, in the order OpenAI writes its fields.
type completion struct {
	ID                string   `json:"id"`
	Object            string   `json:"object"`
	Created           int64    `json:"created"`
	Model             string   `json:"model"`
	Choices           []choice `json:"choices,omitempty"`
	Usage             *usage   `json:"usage,omitempty"`
	ServiceTier       string   `json:"service_tier"`
	SystemFingerprint string   `json:"system_fingerprint"`
}

// chunk is a chat.completion.chunk: its choices are always there (empty
// in the usage chunk), and usage is null or absent until the usage chunk.
type chunk struct {
	completion
	Choices []choice        `json:"choices"`
	Usage   json.RawMessage `json:"usage,omitempty"`
}

type choice struct {
	Index        int             `json:"index"`
	Message      *delta          `json:"message,omitempty"`
	Delta        *delta          `json:"delta,omitempty"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

// delta is a message, or the part of one a chunk carries.
type delta struct {
	Role        string          `json:"role,omitempty"`
	Content     *string         `json:"content,omitempty"`
	Refusal     json.RawMessage `json:"refusal,omitempty"`
	Annotations json.RawMessage `json:"annotations,omitempty"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
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

// sse writes server-sent events, flushing each one, waiting gap between
// them, and stopping after cut of them when cut > 0, or dropping the
// connection after drop of them when drop > 0.
type sse struct {
	w       http.ResponseWriter
	r       *http.Request
	gap     time.Duration
	cut     int
	drop    int
	n       int
	started bool
}

// event writes one "data:" event; it reports whether to go on (false: the
// client left, or the stream is cut here).
func (st *sse) event(v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return st.write(b)
}

func (st *sse) write(data []byte) bool {
	if st.drop > 0 && st.n >= st.drop {
		// net/http closes the connection without the terminating chunk
		panic(http.ErrAbortHandler)
	}
	if st.cut > 0 && st.n >= st.cut {
		st.start()
		return false
	}
	if st.n > 0 && !sleep(st.r, st.gap) {
		return false
	}
	st.start()
	st.w.Write([]byte("data: "))
	st.w.Write(data)
	st.w.Write([]byte("\n\n"))
	if f, ok := st.w.(http.Flusher); ok {
		f.Flush()
	}
	st.n++
	return st.r.Context().Err() == nil
}

func (st *sse) start() {
	if st.started {
		return
	}
	h := st.w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	st.w.WriteHeader(http.StatusOK)
	st.started = true
}

// done writes the final [DONE] event.
func (st *sse) done() bool { return st.write([]byte("[DONE]")) }

func (s *Server) embeddings(w http.ResponseWriter, body []byte) {
	args, ok := s.decodeArgs(w, body, embeddingArgs)
	if !ok {
		return
	}
	model, _ := args["model"].(string)
	dim, ok := s.model(w, model, true)
	if !ok {
		return
	}
	var inputs []string
	switch in := args["input"].(type) {
	case string:
		inputs = []string{in}
	case []any:
		for _, x := range in {
			str, ok := x.(string)
			if !ok {
				s.t.Errorf("openaitest: embedding input %v: the fake takes text, not tokens", args["input"])
				invalid(w, "input", "the fake takes text input only")
				return
			}
			inputs = append(inputs, str)
		}
	}
	if len(inputs) == 0 {
		invalid(w, "input", "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.")
		return
	}
	format, _ := args["encoding_format"].(string)
	if format != "" && format != "float" && format != "base64" {
		invalid(w, "encoding_format", fmt.Sprintf("Invalid value: '%s'. Supported values are: 'float' and 'base64'.", format))
		return
	}
	if args["dimensions"] != nil {
		invalid(w, "dimensions", "This model does not support specifying dimensions.")
		return
	}
	resp := embeddingList{Object: "list", Data: make([]embedding, len(inputs)), Model: model}
	for i, in := range inputs {
		v := Embed(in, dim)
		resp.Usage.PromptTokens += len(ollamatest.Words(in))
		var enc any = v
		if format == "base64" {
			b := make([]byte, 4*len(v))
			for j, f := range v {
				binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(f))
			}
			enc = base64.StdEncoding.EncodeToString(b)
		}
		resp.Data[i] = embedding{Object: "embedding", Index: i, Embedding: enc}
	}
	resp.Usage.TotalTokens = resp.Usage.PromptTokens
	writeJSON(w, http.StatusOK, resp)
}

// embeddingList is the answer to POST /v1/embeddings, in OpenAI's order.
type embeddingList struct {
	Object string      `json:"object"`
	Data   []embedding `json:"data"`
	Model  string      `json:"model"`
	Usage  struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

type embedding struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string
}

// model is a model object, in OpenAI's order.
type model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func modelObject(name string) model {
	return model{ID: name, Object: "model", Created: Created, OwnedBy: "openaitest"}
}

func (s *Server) listModels(w http.ResponseWriter) {
	s.mu.Lock()
	names := make([]string, 0, len(s.models))
	for m := range s.models {
		names = append(names, m)
	}
	s.mu.Unlock()
	slices.Sort(names)
	list := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: make([]model, len(names))}
	for i, n := range names {
		list.Data[i] = modelObject(n)
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) getModel(w http.ResponseWriter, name string) {
	s.mu.Lock()
	_, ok := s.models[name]
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "invalid_request_error", "model", "model_not_found",
			fmt.Sprintf("The model '%s' does not exist", name))
		return
	}
	writeJSON(w, http.StatusOK, modelObject(name))
}

// Events splits a streamed body into the data of its events, failing on
// anything that is not a "data: " line followed by a blank line; the last
// one of a complete stream is "[DONE]".
func Events(t testing.TB, body []byte) []string {
	t.Helper()
	var out []string
	for _, ev := range bytes.SplitAfter(body, []byte("\n\n")) {
		if len(ev) == 0 {
			continue
		}
		data, ok := bytes.CutPrefix(ev, []byte("data: "))
		if !ok || !bytes.HasSuffix(data, []byte("\n\n")) || bytes.Count(data, []byte("\n")) != 2 {
			t.Errorf("event %q is not one data line and a blank line", ev)
			continue
		}
		out = append(out, string(bytes.TrimSuffix(data, []byte("\n\n"))))
	}
	return out
}
