package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/labstack/echo/v4"
)

// The drop-in Ollama endpoint serves Ollama's own API under
// /ollama/{topic}/{context}/, so a client pointed there (OLLAMA_HOST=
// http://router/ollama/t/c) gets a conversation with memory: on /api/chat
// the router stores the new turns in the context and injects what the
// client does not resend (the running summary and earlier turns) into the
// system message. Everything else is relayed to Ollama as it is, streaming
// included. Errors come back in Ollama's Shape, {"error":"…"}, since
// Ollama's clients read that.

// ollamaPrefix is where the drop-in endpoint lives.
const ollamaPrefix = "/ollama"

// ollamaError writes an error as Ollama does.
func ollamaError(c echo.Context, status int, msg string) error {
	return c.JSON(status, map[string]string{"error": msg})
}

// ollamaFail writes an API error in Ollama's Shape.
func (a *API) ollamaFail(c echo.Context, err error) error {
	var apiErr *apierr.Error
	if !errors.As(err, &apiErr) {
		apiErr = &apierr.Error{Code: apierr.CodeInternal, Message: "internal error", Err: err}
	}
	if apiErr.Status() >= 500 {
		a.log.Error("ollama endpoint failed", "path", c.Request().URL.Path, "err", apiErr.Error())
	}
	return ollamaError(c, apiErr.Status(), apiErr.Message)
}

// ollamaRoot answers HEAD / and GET / as Ollama does; clients use it to
// check that the server is up.
func (a *API) ollamaRoot(c echo.Context) error {
	if _, _, err := contextParams(c); err != nil {
		return a.ollamaFail(c, err)
	}
	switch c.Request().Method {
	case http.MethodGet, http.MethodHead:
		return c.String(http.StatusOK, "Ollama is running")
	}
	return a.ollamaForward(c)
}

// needOllama answers 503 when no model server is configured, or when it
// is not Ollama: Ollama's own API cannot be relayed to an OpenAI-compatible
// server (its chat completions, under /v1, are served by openaiChat
// whichever the provider).
func (a *API) needOllama() error {
	if err := a.llm.Need(); err != nil {
		return err
	}
	if k := a.llm.Config().Client.Kind(); k != llmbridge.ProviderOllama {
		return apierr.Errorf(apierr.CodeUnavailable, "the router's model server speaks the %s API, not Ollama's: use /openai/{topic}/{context}/v1, or /ollama/{topic}/{context}/v1/chat/completions", k)
	}
	return nil
}

// upstreamPath is the request's path below the context's prefix, with its
// query.
func upstreamPath(c echo.Context) string {
	p := "/" + c.Param("*")
	if q := c.Request().URL.RawQuery; q != "" {
		p += "?" + q
	}
	return p
}

// proxyOps are the Ollama paths counted by name in the metrics.
var proxyOps = map[string]bool{
	"/api/version": true, "/api/tags": true, "/api/show": true, "/api/generate": true,
	"/api/embed": true, "/api/embeddings": true, "/api/ps": true, "/api/pull": true,
}

// forwardHeaders are the only request headers relayed to the model
// server: what it needs to read the body and pick the answer's format.
// Everything else stays behind, and above all the client's credentials:
// Authorization carries the client's Go-KVDB key, Cookie and
// Proxy-Authorization are credentials for the router or a proxy in front
// of it, never for the model server. A provider that needs a key gets the
// router's own, set by its client, never the caller's. Hop-by-hop headers
// (RFC 9110 §7.6.1) are not on the list either, so they are never relayed.
var forwardHeaders = []string{"Content-Type", "Accept", "User-Agent"}

// answerHeaders are the only headers of the model server's answer relayed
// to the client (Content-Length only when the body is relayed unchanged).
var answerHeaders = []string{"Content-Type", "Content-Length"}

// ollamaForward relays a request to Ollama and its answer back, flushing
// as the answer arrives so streams stay streams.
func (a *API) ollamaForward(c echo.Context) error {
	if _, _, err := contextParams(c); err != nil {
		return a.ollamaFail(c, err)
	}
	if err := a.needOllama(); err != nil {
		return a.ollamaFail(c, err)
	}
	path := upstreamPath(c)
	op := "proxy_other"
	if p, _, _ := strings.Cut(path, "?"); proxyOps[p] {
		op = "proxy_" + strings.TrimPrefix(p, "/api/")
	}
	req := c.Request()
	start := time.Now()
	resp, err := a.llm.Config().Client.Do(req.Context(), req.Method, path, relayHeaders(c), http.MaxBytesReader(c.Response(), req.Body, a.cfg.MaxBodyBytes))
	if err != nil {
		a.llm.Metrics().Observe(op, "", start, err)
		return a.ollamaFail(c, a.llm.Error(req.Method+" "+path, err))
	}
	defer resp.Body.Close()
	err = relay(c, resp, nil)
	if err == nil && resp.StatusCode >= 400 {
		err = fmt.Errorf("ollama answered %d", resp.StatusCode)
	}
	a.llm.Metrics().Observe(op, "", start, err)
	return nil
}

// pickHeaders returns the headers of h named in allow, less any that h's
// Connection header names (a sender marks hop-by-hop headers so, and a
// proxy must not relay them: RFC 9110 §7.6.1), and less any whose value
// holds secret (the caller's Go-KVDB key, "" when it sent none), should a
// client have put it somewhere unexpected.
func pickHeaders(h http.Header, allow []string, secret string) http.Header {
	out := make(http.Header, len(allow))
	for _, k := range allow {
		v := h.Values(k)
		if len(v) == 0 || connectionNames(h, k) || secret != "" && slices.ContainsFunc(v, func(s string) bool { return strings.Contains(s, secret) }) {
			continue
		}
		out[k] = v
	}
	return out
}

// connectionNames reports whether h's Connection header lists name.
func connectionNames(h http.Header, name string) bool {
	for _, v := range h.Values("Connection") {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), name) {
				return true
			}
		}
	}
	return false
}

// relayHeaders are the headers of c's request to relay to the model
// server (see forwardHeaders).
func relayHeaders(c echo.Context) http.Header {
	h := c.Request().Header
	secret, _ := bearer(h.Get(echo.HeaderAuthorization))
	return pickHeaders(h, forwardHeaders, secret)
}

// relay copies an answer from Ollama to the client. With onLine set, an
// NDJSON answer is relayed line by line and each line is shown to onLine
// before it is written; onLine may stop the relay with an error (after
// which the line is not written).
func relay(c echo.Context, resp *http.Response, onLine func([]byte) error) error {
	w := c.Response()
	for k, v := range pickHeaders(resp.Header, answerHeaders, "") {
		if k != "Content-Length" || onLine == nil {
			w.Header()[k] = v
		}
	}
	w.WriteHeader(resp.StatusCode)
	if c.Request().Method == http.MethodHead {
		return nil
	}
	if onLine == nil {
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return werr
				}
				w.Flush()
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if lerr := onLine(line); lerr != nil {
				return lerr
			}
			if _, werr := w.Write(line); werr != nil {
				return werr
			}
			w.Flush()
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// proxyMessage is a message of an Ollama chat request: what the router
// reads of it, and the whole of it, relayed unchanged.
type proxyMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	raw     json.RawMessage
}

// chatLine is what the router reads of an Ollama chat answer (a line of
// the stream, or the whole answer).
type chatLine struct {
	Message struct {
		Content string `json:"content"`
	} `json:"message"`
	Done            bool   `json:"done"`
	Error           any    `json:"error"`
	PromptEvalCount int    `json:"prompt_eval_count"`
	EvalCount       int    `json:"eval_count"`
	Model           string `json:"model"`
}

// ollamaChat serves /api/chat with memory.
func (a *API) ollamaChat(c echo.Context) error {
	topic, id, err := contextParams(c)
	if err != nil {
		return a.ollamaFail(c, err)
	}
	if err := a.needOllama(); err != nil {
		return a.ollamaFail(c, err)
	}
	// Ollama takes a body whatever its Content-Type; so does its stand-in.
	buf := new(bytes.Buffer)
	if _, err := buf.ReadFrom(http.MaxBytesReader(c.Response(), c.Request().Body, a.cfg.MaxBodyBytes)); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return ollamaError(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds the limit of %d bytes", a.cfg.MaxBodyBytes))
		}
		return ollamaError(c, http.StatusBadRequest, "read request body: "+err.Error())
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &body); err != nil {
		return ollamaError(c, http.StatusBadRequest, err.Error())
	}
	var rawMsgs []json.RawMessage
	if m, ok := body["messages"]; ok {
		if err := json.Unmarshal(m, &rawMsgs); err != nil {
			return ollamaError(c, http.StatusBadRequest, "messages: "+err.Error())
		}
	}
	msgs := make([]proxyMessage, len(rawMsgs))
	for i, raw := range rawMsgs {
		if err := json.Unmarshal(raw, &msgs[i]); err != nil {
			return ollamaError(c, http.StatusBadRequest, fmt.Sprintf("messages[%d]: %v", i, err))
		}
		msgs[i].Role = strings.ToLower(msgs[i].Role)
		msgs[i].raw = raw
	}
	var model string
	json.Unmarshal(body["model"], &model)
	stream := true
	if s, ok := body["stream"]; ok {
		json.Unmarshal(s, &stream)
	}

	ctx := c.Request().Context()
	turn, err := a.llm.Recall(ctx, topic, id, sentTurns(msgs))
	if err != nil {
		return a.ollamaFail(c, err)
	}
	if text := turn.Memory; text != "" {
		injectMemory(&msgs, text)
		out := make([]json.RawMessage, len(msgs))
		for i, m := range msgs {
			out[i] = m.raw
		}
		body["messages"] = schema.MustJSON(out)
	}

	start := time.Now()
	resp, err := a.llm.Config().Client.Do(ctx, http.MethodPost, "/api/chat", relayHeaders(c), bytes.NewReader(schema.MustJSON(body)))
	if err != nil {
		a.llm.Metrics().Observe("proxy_chat", "", start, err)
		return a.ollamaFail(c, a.llm.Error("chat with "+model, err))
	}
	defer resp.Body.Close()
	var answer strings.Builder
	var last chatLine
	finished := false
	store := func() error {
		a.llm.Remember(ctx, turn, answer.String())
		return nil // the answer is the client's either way
	}
	var relayErr error
	if resp.StatusCode != http.StatusOK {
		relayErr = relay(c, resp, nil)
	} else if stream {
		relayErr = relay(c, resp, func(line []byte) error {
			var l chatLine
			if json.Unmarshal(line, &l) != nil || l.Error != nil {
				return nil // relayed as is; nothing is stored
			}
			answer.WriteString(l.Message.Content)
			if l.Done {
				last, finished = l, true
				return store()
			}
			return nil
		})
	} else {
		var whole bytes.Buffer
		if _, relayErr = whole.ReadFrom(resp.Body); relayErr == nil {
			var l chatLine
			if json.Unmarshal(whole.Bytes(), &l) == nil && l.Error == nil && l.Done {
				answer.WriteString(l.Message.Content)
				last, finished = l, true
				store()
			}
			resp.Body = io.NopCloser(&whole)
			relayErr = relay(c, resp, nil)
		}
	}
	callErr := relayErr
	switch {
	case resp.StatusCode != http.StatusOK:
		callErr = fmt.Errorf("ollama answered %d", resp.StatusCode)
	case !finished && callErr == nil:
		callErr = errors.New("the answer ended without a done line")
	}
	a.llm.Metrics().Observe("proxy_chat", a.llm.ModelLabel(model, callErr), start, callErr)
	if finished {
		a.llm.Metrics().AddTokens(model, last.PromptEvalCount, last.EvalCount)
	}
	return nil
}

// injectMemory merges memory into the first system message, or puts a
// system message first when there is none.
func injectMemory(msgs *[]proxyMessage, text string) {
	for i, m := range *msgs {
		if m.Role != "system" {
			continue
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(m.raw, &obj) != nil {
			break
		}
		content := m.Content
		if content != "" {
			content += "\n\n"
		}
		content += text
		obj["content"] = schema.MustJSON(content)
		(*msgs)[i].Content, (*msgs)[i].raw = content, schema.MustJSON(obj)
		return
	}
	sys := proxyMessage{Role: "system", Content: text}
	sys.raw = schema.MustJSON(map[string]string{"role": "system", "content": text})
	*msgs = append([]proxyMessage{sys}, *msgs...)
}

// sentTurns is what the memory policy compares of a client's chat
// history: its messages of the roles a context stores.
func sentTurns(msgs []proxyMessage) []llmbridge.Message {
	out := make([]llmbridge.Message, 0, len(msgs))
	for _, m := range msgs {
		if schema.ValidRoles[m.Role] {
			out = append(out, llmbridge.Message{Role: m.Role, Content: m.Content})
		}
	}
	return out
}
