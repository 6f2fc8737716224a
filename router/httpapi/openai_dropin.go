package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/labstack/echo/v4"
)

// The drop-in OpenAI endpoint serves OpenAI's chat completions API under
// /openai/{topic}/{context}/v1, so an unmodified OpenAI client
// (OPENAI_BASE_URL=http://router/openai/t/c/v1) talks to a conversation
// with memory: /chat/completions stores the new turns and injects what the
// client does not resend, as /ollama/…/api/chat does. The same handler
// serves /ollama/{topic}/{context}/v1/chat/completions. The answer is
// asked of the provider through its interface (llmbridge.Provider.Chat),
// so either provider serves it, and rendered in OpenAI's wire format
// (JSON, or SSE chunks ending "data: [DONE]"). /models and /embeddings
// are relayed. Errors come back in OpenAI's shape,
// {"error":{"message","type","code"}}, since OpenAI's clients read that.

// openaiPrefix is where the drop-in OpenAI endpoint lives.
const openaiPrefix = "/openai"

// openaiError writes an error as OpenAI does: type is
// invalid_request_error for a client's mistake, server_error otherwise;
// code is the API's error code.
func openaiError(c echo.Context, status int, code apierr.Code, msg string) error {
	typ := "invalid_request_error"
	switch {
	case status == http.StatusUnauthorized:
		typ = "authentication_error"
	case status == http.StatusForbidden:
		typ = "permission_error"
	case status == http.StatusTooManyRequests:
		typ = "rate_limit_error"
	case status >= 500:
		typ = "server_error"
	}
	return c.JSON(status, oaErrorBody{Error: oaErrorObject{Message: msg, Type: typ, Code: code}})
}

// openaiFail writes an API error in OpenAI's shape.
func (a *API) openaiFail(c echo.Context, err error) error {
	var apiErr *apierr.Error
	if !errors.As(err, &apiErr) {
		apiErr = &apierr.Error{Code: apierr.CodeInternal, Message: "internal error", Err: err}
	}
	if apiErr.Status() >= 500 {
		a.log.Error("openai endpoint failed", "path", c.Request().URL.Path, "err", apiErr.Error())
	}
	return openaiError(c, apiErr.Status(), apiErr.Code, apiErr.Message)
}

// oaMessage is a message of an OpenAI chat request. Content is a string
// or an array of parts, of which the text parts are read.
type oaMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// text is the message's text: its string content, or its text parts
// joined by newlines.
func (m oaMessage) text() (string, error) {
	if len(m.Content) == 0 || string(m.Content) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(m.Content, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(m.Content, &parts); err != nil {
		return "", errors.New("content: want a string or an array of parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return "", fmt.Errorf("content: a %q part is not supported by the drop-in endpoint; send text", p.Type)
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// oaChatRequest is what the endpoint reads of a chat completions request.
// Sampling parameters are passed on under Ollama's option names, which
// both providers map (see llmbridge.ChatRequest.Options).
type oaChatRequest struct {
	Model         string      `json:"model"`
	Messages      []oaMessage `json:"messages"`
	Stream        bool        `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	N                   *int              `json:"n"`
	Temperature         *float64          `json:"temperature"`
	TopP                *float64          `json:"top_p"`
	Seed                *int64            `json:"seed"`
	MaxTokens           *int              `json:"max_tokens"`
	MaxCompletionTokens *int              `json:"max_completion_tokens"`
	FrequencyPenalty    *float64          `json:"frequency_penalty"`
	PresencePenalty     *float64          `json:"presence_penalty"`
	Stop                any               `json:"stop"`
	Tools               []json.RawMessage `json:"tools"`
}

// options maps the request's sampling parameters to Ollama's names.
func (r *oaChatRequest) options() map[string]any {
	o := map[string]any{}
	if r.Temperature != nil {
		o["temperature"] = *r.Temperature
	}
	if r.TopP != nil {
		o["top_p"] = *r.TopP
	}
	if r.Seed != nil {
		o["seed"] = *r.Seed
	}
	if r.FrequencyPenalty != nil {
		o["frequency_penalty"] = *r.FrequencyPenalty
	}
	if r.PresencePenalty != nil {
		o["presence_penalty"] = *r.PresencePenalty
	}
	if r.MaxTokens != nil {
		o["num_predict"] = *r.MaxTokens
	}
	if r.MaxCompletionTokens != nil {
		o["num_predict"] = *r.MaxCompletionTokens
	}
	switch s := r.Stop.(type) {
	case string:
		o["stop"] = []string{s}
	case []any:
		stops := make([]string, 0, len(s))
		for _, v := range s {
			if str, ok := v.(string); ok {
				stops = append(stops, str)
			}
		}
		o["stop"] = stops
	}
	if len(o) == 0 {
		return nil
	}
	return o
}

// completionSeq numbers the completions' ids within a router's life.
var completionSeq atomic.Uint64

// openaiChat serves /v1/chat/completions with memory.
func (a *API) openaiChat(c echo.Context) error {
	topic, id, err := contextParams(c)
	if err != nil {
		return a.openaiFail(c, err)
	}
	if err := a.llm.Need(); err != nil {
		return a.openaiFail(c, err)
	}
	var req oaChatRequest
	buf := new(bytes.Buffer)
	if _, err := buf.ReadFrom(http.MaxBytesReader(c.Response(), c.Request().Body, a.cfg.MaxBodyBytes)); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return openaiError(c, http.StatusRequestEntityTooLarge, apierr.CodePayloadTooLarge, fmt.Sprintf("request body exceeds the limit of %d bytes", a.cfg.MaxBodyBytes))
		}
		return openaiError(c, http.StatusBadRequest, apierr.CodeInvalidArgument, "read request body: "+err.Error())
	}
	if err := json.Unmarshal(buf.Bytes(), &req); err != nil {
		return openaiError(c, http.StatusBadRequest, apierr.CodeInvalidArgument, "request body: "+err.Error())
	}
	if req.Model == "" {
		req.Model = a.llm.Config().ChatModel
	}
	switch {
	case req.Model == "":
		return openaiError(c, http.StatusBadRequest, apierr.CodeInvalidArgument, "model: required (the router has no -chat-model)")
	case len(req.Messages) == 0:
		return openaiError(c, http.StatusBadRequest, apierr.CodeInvalidArgument, "messages: at least one message is required")
	case req.N != nil && *req.N != 1:
		return openaiError(c, http.StatusBadRequest, apierr.CodeInvalidArgument, "n: the drop-in endpoint answers one choice; send n=1 or none")
	case len(req.Tools) > 0:
		return openaiError(c, http.StatusBadRequest, apierr.CodeInvalidArgument, "tools: not supported by the drop-in endpoint")
	}
	msgs := make([]llmbridge.Message, len(req.Messages))
	for i, m := range req.Messages {
		text, err := m.text()
		if err != nil {
			return openaiError(c, http.StatusBadRequest, apierr.CodeInvalidArgument, fmt.Sprintf("messages[%d].%v", i, err))
		}
		role := strings.ToLower(m.Role)
		if role == "developer" {
			role = "system" // OpenAI's newer name for the system message
		}
		if role != "system" && role != "user" && role != "assistant" && role != "tool" {
			return openaiError(c, http.StatusBadRequest, apierr.CodeInvalidArgument, fmt.Sprintf("messages[%d].role: %q is not one of system, developer, user, assistant, tool", i, m.Role))
		}
		msgs[i] = llmbridge.Message{Role: role, Content: text}
	}

	ctx := c.Request().Context()
	turn, err := a.llm.Recall(ctx, topic, id, storedRoles(msgs))
	if err != nil {
		return a.openaiFail(c, err)
	}
	if turn.Memory != "" {
		msgs = withMemory(msgs, turn.Memory)
	}

	cid := "chatcmpl-kvdb-" + strconv.FormatUint(completionSeq.Add(1), 36) + strconv.FormatInt(time.Now().UnixNano(), 36)
	ev := oaChunk{ID: cid, Object: "chat.completion.chunk", Created: time.Now().Unix(), Model: req.Model, Choices: make([]oaChunkChoice, 1)}
	w := c.Response()
	var answer strings.Builder
	var last llmbridge.ChatChunk
	var sse *sseWriter
	begin := func() {
		w.Header().Set(echo.HeaderContentType, "text/event-stream")
		w.Header().Set(echo.HeaderCacheControl, "no-cache")
		w.WriteHeader(http.StatusOK)
		sse = newSSEWriter(w)
	}
	defer func() {
		if sse != nil {
			sse.release()
		}
	}()
	err = a.llm.DropInChat(ctx, llmbridge.ChatRequest{Model: req.Model, Messages: msgs, Options: req.options()}, func(ch llmbridge.ChatChunk) error {
		answer.WriteString(ch.Content)
		if ch.Done {
			last = ch
		}
		if !req.Stream {
			return nil
		}
		if sse == nil {
			begin()
			ev.Choices[0].Delta = oaDelta{Role: "assistant"}
			sse.event(&ev)
		}
		if ch.Content != "" {
			ev.Choices[0].Delta = oaDelta{Content: ch.Content}
			sse.event(&ev)
		}
		if ch.Done {
			return nil
		}
		return sse.flush()
	})
	if err != nil {
		apiErr := a.llm.Error("chat with "+req.Model, err)
		if sse == nil {
			return a.openaiFail(c, apiErr)
		}
		// The stream has begun: the error is its last event, without
		// [DONE], so a client sees the answer did not finish. Nothing is
		// stored.
		var e *apierr.Error
		errors.As(apiErr, &e)
		a.log.Warn("openai endpoint: chat failed mid-stream", "path", c.Request().URL.Path, "err", e.Error())
		sse.event(oaErrorBody{Error: oaErrorObject{Message: e.Message, Type: "server_error", Code: e.Code}})
		sse.flush()
		return nil
	}
	a.llm.Remember(ctx, turn, answer.String())
	reason := last.DoneReason
	if reason == "" {
		reason = "stop"
	}
	usage := &oaUsage{PromptTokens: last.PromptTokens, CompletionTokens: last.CompletionTokens, TotalTokens: last.PromptTokens + last.CompletionTokens}
	if !req.Stream {
		return c.JSON(http.StatusOK, oaCompletion{
			ID: cid, Object: "chat.completion", Created: ev.Created, Model: req.Model,
			Choices: []oaChoice{{Message: oaDelta{Role: "assistant", Content: answer.String()}, FinishReason: reason}},
			Usage:   usage,
		})
	}
	if sse == nil { // an answer with no chunk at all
		begin()
	}
	ev.Choices[0].Delta, ev.Choices[0].FinishReason = oaDelta{}, &reason
	sse.event(&ev)
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		ev.Choices, ev.Usage = []oaChunkChoice{}, usage
		sse.event(&ev)
	}
	sse.done()
	return nil
}

// The answer's wire format: OpenAI's chat.completion and
// chat.completion.chunk objects, as their clients decode them.
type (
	oaCompletion struct {
		ID      string     `json:"id"`
		Object  string     `json:"object"`
		Created int64      `json:"created"`
		Model   string     `json:"model"`
		Choices []oaChoice `json:"choices"`
		Usage   *oaUsage   `json:"usage,omitempty"`
	}
	oaChoice struct {
		Index        int     `json:"index"`
		Message      oaDelta `json:"message"`
		FinishReason string  `json:"finish_reason"`
	}
	oaChunk struct {
		ID      string          `json:"id"`
		Object  string          `json:"object"`
		Created int64           `json:"created"`
		Model   string          `json:"model"`
		Choices []oaChunkChoice `json:"choices"`
		Usage   *oaUsage        `json:"usage,omitempty"`
	}
	oaChunkChoice struct {
		Index        int     `json:"index"`
		Delta        oaDelta `json:"delta"`
		FinishReason *string `json:"finish_reason"` // null until the last
	}
	oaDelta struct {
		Role    string `json:"role,omitempty"`
		Content string `json:"content"`
	}
	oaUsage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	}
	oaErrorBody struct {
		Error oaErrorObject `json:"error"`
	}
	oaErrorObject struct {
		Message string      `json:"message"`
		Type    string      `json:"type"`
		Code    apierr.Code `json:"code"`
	}
)

// sseWriter writes Server-Sent Events of JSON data to a response. Its
// buffer and encoder are pooled: a streamed chat allocates neither.
type sseWriter struct {
	w   *echo.Response
	buf *bufio.Writer
	enc *json.Encoder
}

var ssePool = sync.Pool{New: func() any {
	s := &sseWriter{buf: bufio.NewWriterSize(nil, 4<<10)}
	s.enc = json.NewEncoder(s.buf)
	s.enc.SetEscapeHTML(false)
	return s
}}

func newSSEWriter(w *echo.Response) *sseWriter {
	s := ssePool.Get().(*sseWriter)
	s.w = w
	s.buf.Reset(w)
	return s
}

// event writes v as one "data:" event (the encoder ends it with a newline;
// the blank line ends the event).
func (s *sseWriter) event(v any) {
	s.buf.WriteString("data: ")
	s.enc.Encode(v)
	s.buf.WriteByte('\n')
}

// flush sends what is buffered to the client now.
func (s *sseWriter) flush() error {
	if err := s.buf.Flush(); err != nil {
		return err
	}
	s.w.Flush()
	return nil
}

// done ends the stream as OpenAI does.
func (s *sseWriter) done() {
	s.buf.WriteString("data: [DONE]\n\n")
	s.flush()
}

func (s *sseWriter) release() {
	s.buf.Reset(nil)
	s.w = nil
	ssePool.Put(s)
}

// storedRoles is what the memory policy compares of a client's history:
// its messages of the roles a context stores (see sentTurns).
func storedRoles(msgs []llmbridge.Message) []llmbridge.Message {
	pm := make([]proxyMessage, len(msgs))
	for i, m := range msgs {
		pm[i] = proxyMessage{Role: m.Role, Content: m.Content}
	}
	return sentTurns(pm)
}

// withMemory merges memory into the first system message, or puts a
// system message first (as injectMemory does for Ollama's requests).
func withMemory(msgs []llmbridge.Message, text string) []llmbridge.Message {
	out := make([]llmbridge.Message, len(msgs), len(msgs)+1)
	copy(out, msgs)
	for i, m := range out {
		if m.Role == "system" {
			if m.Content != "" {
				out[i].Content += "\n\n"
			}
			out[i].Content += text
			return out
		}
	}
	return append([]llmbridge.Message{{Role: "system", Content: text}}, out...)
}

// openaiRelay relays /v1/models and /v1/embeddings to the provider: to
// its base URL for the openai provider, to Ollama's own /v1 for Ollama.
func (a *API) openaiRelay(c echo.Context) error {
	if _, _, err := contextParams(c); err != nil {
		return a.openaiFail(c, err)
	}
	if err := a.llm.Need(); err != nil {
		return a.openaiFail(c, err)
	}
	client := a.llm.Config().Client
	// The route names the path: /models or /embeddings, below /v1.
	name := c.Path()[strings.LastIndex(c.Path(), "/v1/")+len("/v1"):]
	path := name
	if client.Kind() == llmbridge.ProviderOllama {
		path = "/v1" + name
	}
	if q := c.Request().URL.RawQuery; q != "" {
		path += "?" + q
	}
	req := c.Request()
	op := "proxy_openai_" + name[1:]
	start := time.Now()
	resp, err := client.Do(req.Context(), req.Method, path, relayHeaders(c), http.MaxBytesReader(c.Response(), req.Body, a.cfg.MaxBodyBytes))
	if err != nil {
		a.llm.Metrics().Observe(op, "", start, err)
		return a.openaiFail(c, a.llm.Error(req.Method+" "+path, err))
	}
	defer resp.Body.Close()
	err = relay(c, resp, nil)
	if err == nil && resp.StatusCode >= 400 {
		err = fmt.Errorf("the provider answered %d", resp.StatusCode)
	}
	a.llm.Metrics().Observe(op, "", start, err)
	return nil
}
