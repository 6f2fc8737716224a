package httpapi

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/labstack/echo/v4"
)

// messagesRequest is the body of POST …/messages.
type messagesRequest struct {
	Messages []schema.Message `json:"messages"`
}

// appendMessagesHandler serves POST …/contexts/{id}/messages.
func (a *API) appendMessagesHandler(c echo.Context) error {
	topic, id, err := contextParams(c)
	if err != nil {
		return err
	}
	req, err := withBody(a, c, func(b []byte) (messagesRequest, error) {
		var m messagesRequest
		if err := schema.DecodeJSON(b, &m); err != nil {
			return m, err
		}
		if len(m.Messages) == 0 {
			return m, apierr.Errorf(apierr.CodeInvalidArgument, "field \"messages\": at least one message is required")
		}
		for i, msg := range m.Messages {
			if !schema.ValidRoles[msg.Role] {
				return m, apierr.Errorf(apierr.CodeInvalidArgument, "field \"messages[%d].role\": %q is not one of system, user, assistant, tool", i, schema.Truncate(msg.Role))
			}
		}
		return m, nil
	})
	if err != nil {
		return err
	}
	var match uint64
	if m := c.Request().Header.Get("If-Match"); m != "" {
		v, ok := schema.ParseETag(m)
		if !ok {
			return apierr.Errorf(apierr.CodeInvalidArgument, "If-Match %q is not an entity tag of this API", schema.Truncate(m))
		}
		match = v
	}
	if _, _, err := a.docs.Topic(c.Request().Context(), topic); err != nil {
		return err
	}
	res, err := a.docs.Append(c.Request().Context(), topic, id, req.Messages, match, nil)
	if err != nil {
		return err
	}
	c.Response().Header().Set("ETag", schema.ETag(res.Version))
	return c.JSONBlob(http.StatusOK, fmt.Appendf(nil, `{"messages_count":%d}`, len(res.Doc.Content.Messages)))
}

// getMessages serves GET …/contexts/{id}/messages?last=N: the last N
// messages (all without last), oldest first.
func (a *API) getMessages(c echo.Context) error {
	topic, id, err := contextParams(c)
	if err != nil {
		return err
	}
	last := -1
	if s := c.QueryParam("last"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > schema.MaxMessages {
			return apierr.Errorf(apierr.CodeInvalidArgument, "last %q must be an integer from 0 to %d", schema.Truncate(s), schema.MaxMessages)
		}
		last = n
	}
	doc, v, err := a.docs.ReadContext(c.Request().Context(), topic, id)
	if err != nil {
		return err
	}
	msgs := doc.Content.Messages
	if last >= 0 && last < len(msgs) {
		msgs = msgs[len(msgs)-last:]
	}
	if msgs == nil {
		msgs = []schema.Message{}
	}
	c.Response().Header().Set("ETag", schema.ETag(v))
	return c.JSONBlob(http.StatusOK, schema.MustJSON(map[string]any{"messages": msgs}))
}
