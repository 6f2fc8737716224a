package httpapi

import (
	"net/http"
	"strconv"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/docstore"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/labstack/echo/v4"
)

// messagesRequest is the body of POST …/messages.
type messagesRequest struct {
	Messages []schema.Message `json:"messages"`
}

// appendedAnswer is the answer of POST …/messages.
type appendedAnswer struct {
	MessagesCount uint64 `json:"messages_count"`
	FirstSeq      uint64 `json:"first_seq"`
	LastSeq       uint64 `json:"last_seq"`
}

// appendMessagesHandler serves POST …/contexts/{id}/messages. An
// Idempotency-Key header makes a retry of the same append store nothing
// and answer what the first stored.
func (a *API) appendMessagesHandler(c echo.Context) error {
	topic, id, err := contextParams(c)
	if err != nil {
		return err
	}
	idem := c.Request().Header.Get("Idempotency-Key")
	if len(idem) > schema.MaxIdemKeyLen {
		return apierr.Errorf(apierr.CodeInvalidArgument, "Idempotency-Key: longer than %d bytes", schema.MaxIdemKeyLen)
	}
	req, err := withBody(a, c, func(b []byte) (messagesRequest, error) {
		var m messagesRequest
		if err := schema.DecodeJSON(b, &m); err != nil {
			return m, err
		}
		if len(m.Messages) == 0 {
			return m, apierr.Errorf(apierr.CodeInvalidArgument, "field \"messages\": at least one message is required")
		}
		if len(m.Messages) > schema.MaxAppendMessages {
			return m, apierr.Errorf(apierr.CodeInvalidArgument, "field \"messages\": %d messages in one append, at most %d allowed", len(m.Messages), schema.MaxAppendMessages)
		}
		for i, msg := range m.Messages {
			if !schema.ValidRoles[msg.Role] {
				return m, apierr.Errorf(apierr.CodeInvalidArgument, "field \"messages[%d].role\": %q is not one of system, user, assistant, tool", i, schema.Truncate(msg.Role))
			}
			m.Messages[i].Seq = 0 // the router numbers messages
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
	res, err := a.docs.AppendKeyed(c.Request().Context(), topic, id, req.Messages, match, idem, nil)
	if err != nil {
		return err
	}
	c.Response().Header().Set("ETag", schema.ETag(res.Version))
	if res.Replayed {
		c.Response().Header().Set("Idempotent-Replayed", "true")
	}
	return c.JSONBlob(http.StatusOK, schema.MustJSON(appendedAnswer{MessagesCount: res.Count, FirstSeq: res.First, LastSeq: res.Last}))
}

// messagesAnswer is the answer of GET …/messages.
type messagesAnswer struct {
	Messages      []schema.Message `json:"messages"`
	MessagesCount uint64           `json:"messages_count"`
	NextCursor    *string          `json:"next_cursor,omitempty"`
}

// getMessages serves GET …/contexts/{id}/messages: with last=N the newest
// N messages, oldest first; with limit and/or cursor a page of the whole
// history, oldest first, next_cursor "" at its end (each costs its page,
// not the conversation); with neither, the whole conversation.
func (a *API) getMessages(c echo.Context) error {
	topic, id, err := contextParams(c)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	var page docstore.MessagePage
	if s := q.Get("last"); s != "" || q.Has("last") {
		if q.Has("limit") || q.Has("cursor") {
			return apierr.Errorf(apierr.CodeInvalidArgument, "last cannot be combined with limit or cursor: last reads the newest messages, limit and cursor page from the oldest")
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > schema.MaxMessages {
			return apierr.Errorf(apierr.CodeInvalidArgument, "last %q must be an integer from 0 to %d", schema.Truncate(s), schema.MaxMessages)
		}
		if page, err = a.docs.LastMessages(c.Request().Context(), topic, id, n); err != nil {
			return err
		}
		c.Response().Header().Set("ETag", schema.ETag(page.Version))
		return c.JSONBlob(http.StatusOK, schema.MustJSON(messagesAnswer{Messages: page.Messages, MessagesCount: page.Count}))
	}
	if !q.Has("limit") && !q.Has("cursor") {
		// The whole conversation, as before paging existed.
		doc, v, err := a.docs.ReadContext(c.Request().Context(), topic, id)
		if err != nil {
			return err
		}
		msgs := doc.Content.Messages
		if msgs == nil {
			msgs = []schema.Message{}
		}
		c.Response().Header().Set("ETag", schema.ETag(v))
		return c.JSONBlob(http.StatusOK, schema.MustJSON(messagesAnswer{Messages: msgs, MessagesCount: uint64(len(msgs))}))
	}
	limit, err := pageLimit(c)
	if err != nil {
		return err
	}
	var after uint64
	if cur := q.Get("cursor"); cur != "" {
		s, err := schema.DecodeCursor(cur, func(s string) bool {
			n, err := strconv.ParseUint(s, 10, 64)
			return err == nil && n > 0
		})
		if err != nil {
			return err
		}
		after, _ = strconv.ParseUint(s, 10, 64)
	}
	if page, err = a.docs.Messages(c.Request().Context(), topic, id, after, limit); err != nil {
		return err
	}
	next := ""
	if page.Next != 0 {
		next = schema.EncodeCursor(strconv.FormatUint(page.Next, 10))
	}
	c.Response().Header().Set("ETag", schema.ETag(page.Version))
	return c.JSONBlob(http.StatusOK, schema.MustJSON(messagesAnswer{Messages: page.Messages, MessagesCount: page.Count, NextCursor: &next}))
}
