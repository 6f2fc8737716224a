package httpapi

import (
	"errors"
	"net/http"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/llm"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/labstack/echo/v4"
)

// chatHandler serves POST …/contexts/{id}/chat (see llm.Chat): the
// model's reply streamed as NDJSON lines, or whole.
func (a *API) chatHandler(c echo.Context) error {
	topic, id, err := contextParams(c)
	if err != nil {
		return err
	}
	req, err := withBody(a, c, func(b []byte) (llm.ChatRequest, error) {
		var q llm.ChatRequest
		if err := schema.DecodeJSON(b, &q); err != nil {
			return q, err
		}
		return q, q.Validate()
	})
	if err != nil {
		return err
	}
	resp := c.Response()
	started := false
	line := func(v any) error {
		if !started {
			resp.Header().Set(echo.HeaderContentType, "application/x-ndjson")
			resp.WriteHeader(http.StatusOK)
			started = true
		}
		if _, err := resp.Write(append(schema.MustJSON(v), '\n')); err != nil {
			return err
		}
		resp.Flush()
		return nil
	}
	var piece func(string) error
	if req.Stream {
		piece = func(text string) error {
			return line(map[string]any{"message": schema.Message{Role: "assistant", Content: text}, "done": false})
		}
	}
	ctx := c.Request().Context()
	out, err := a.llm.Chat(ctx, topic, id, req, piece)
	switch {
	case err != nil && ctx.Err() != nil:
		a.log.Info("chat abandoned by its client; nothing stored", "topic", topic, "id", id)
		return nil
	case err != nil && started:
		var apiErr *apierr.Error
		if !errors.As(err, &apiErr) {
			apiErr = &apierr.Error{Code: apierr.CodeInternal, Message: "internal error", Err: err}
		}
		if apiErr.Status() >= 500 {
			a.log.Error("chat failed mid-stream", "topic", topic, "id", id, "err", apiErr.Error())
		}
		var body ErrorBody
		body.Error.Code, body.Error.Message = apiErr.Code, apiErr.Message
		line(body)
		return nil
	case err != nil:
		return err
	case !req.Stream:
		resp.Header().Set("ETag", out.ETag)
		out.ETag = ""
		return c.JSONBlob(http.StatusOK, schema.MustJSON(out))
	}
	out.Message.Content = ""
	line(out)
	return nil
}

// search serves POST /api/v1/topics/{t}/search: the k contexts whose
// vectors are most similar (cosine) to the query's, best first.
//
// search serves POST /api/v1/topics/{t}/search (see llm.Search).
func (a *API) search(c echo.Context) error {
	topic, err := topicParam(c)
	if err != nil {
		return err
	}
	withContent, err := includeContent(c)
	if err != nil {
		return err
	}
	req, err := withBody(a, c, func(b []byte) (llm.SearchRequest, error) {
		var s llm.SearchRequest
		if err := schema.DecodeJSON(b, &s); err != nil {
			return s, err
		}
		return s, s.Validate()
	})
	if err != nil {
		return err
	}
	out, err := a.llm.Search(c.Request().Context(), topic, req, withContent)
	if err != nil {
		return err
	}
	return c.JSONBlob(http.StatusOK, out)
}
