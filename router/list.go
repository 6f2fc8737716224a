package router

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/labstack/echo/v4"
)

const (
	defaultPageLimit = 100
	maxPageLimit     = 1000
)

// Cursors are opaque to clients: the last name or id of the page, base64.
func encodeCursor(last string) string { return base64.RawURLEncoding.EncodeToString([]byte(last)) }

func decodeCursor(s string, valid func(string) bool) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || !valid(string(b)) {
		return "", apierr.Errorf(apierr.CodeInvalidArgument, "cursor %q is malformed: pass back a next_cursor unchanged", schema.Truncate(s))
	}
	return string(b), nil
}

func pageLimit(c echo.Context) (int, error) {
	s := c.QueryParam("limit")
	if s == "" {
		return defaultPageLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxPageLimit {
		return 0, apierr.Errorf(apierr.CodeInvalidArgument, "limit %q must be an integer from 1 to %d", schema.Truncate(s), maxPageLimit)
	}
	return n, nil
}

// includeContent reads the include parameter of lists and searches.
func includeContent(c echo.Context) (bool, error) {
	switch inc := c.QueryParam("include"); inc {
	case "":
		return false, nil
	case "content":
		return true, nil
	default:
		return false, apierr.Errorf(apierr.CodeInvalidArgument, "include %q: the only choice is \"content\"", schema.Truncate(inc))
	}
}

// validPrefix accepts what can begin a topic name (or nothing).
func validPrefix(s string) bool { return s == "" || schema.ValidName(s) }

func (r *Router) listTopics(c echo.Context) error {
	limit, err := pageLimit(c)
	if err != nil {
		return err
	}
	prefix := c.QueryParam("prefix")
	if !validPrefix(prefix) {
		return apierr.Errorf(apierr.CodeInvalidArgument, "prefix %q cannot begin a topic name", schema.Truncate(prefix))
	}
	q := coord.PageQuery{Bucket: schema.BucketTopics, Prefix: []byte(prefix), Limit: limit, Keep: r.topicFilter(c)}
	if cur := c.QueryParam("cursor"); cur != "" {
		last, err := decodeCursor(cur, schema.ValidName)
		if err != nil {
			return err
		}
		q.After = []byte(last)
	}
	recs, next, err := r.coord.Page(c.Request().Context(), q)
	if err != nil {
		return err
	}
	out := append(make([]byte, 0, 64*len(recs)+64), `{"topics":[`...)
	for i, rec := range recs {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, rec.Value...)
	}
	out = appendNextCursor(out, next, nil)
	return c.JSONBlob(http.StatusOK, out)
}

func appendNextCursor(dst []byte, next, prefix []byte) []byte {
	dst = append(dst, `],"next_cursor":"`...)
	if next != nil {
		dst = append(dst, encodeCursor(string(bytes.TrimPrefix(next, prefix)))...)
	}
	return append(dst, `"}`...)
}

func (r *Router) listContexts(c echo.Context) error {
	topic, err := topicParam(c)
	if err != nil {
		return err
	}
	limit, err := pageLimit(c)
	if err != nil {
		return err
	}
	withContent, err := includeContent(c)
	if err != nil {
		return err
	}
	params := c.QueryParams()
	tags, model := params["tag"], c.QueryParam("model")
	for _, t := range tags {
		if t == "" || len(t) > schema.MaxTagLen {
			return apierr.Errorf(apierr.CodeInvalidArgument, "tag %q: a tag has 1 to %d bytes", schema.Truncate(t), schema.MaxTagLen)
		}
	}
	if len(model) > schema.MaxModelLen {
		return apierr.Errorf(apierr.CodeInvalidArgument, "model: longer than %d bytes", schema.MaxModelLen)
	}
	prefix := []byte(topic + schema.KeySep)
	q := coord.PageQuery{Bucket: schema.BucketContexts, Prefix: prefix, Limit: limit, MetaOnly: !withContent}
	if cur := c.QueryParam("cursor"); cur != "" {
		last, err := decodeCursor(cur, schema.ValidID)
		if err != nil {
			return err
		}
		q.After = append(bytes.Clone(prefix), last...)
	}
	if len(tags) > 0 || model != "" {
		q.Keep = func(rec storage.Record) bool {
			m, _, err := codec.DecodeMetadata(rec.Value)
			if err != nil {
				return false
			}
			if model != "" && m.Model != model {
				return false
			}
			for _, t := range tags {
				if !slices.Contains(m.Tags, t) {
					return false
				}
			}
			return true
		}
	}
	q.Keep = codec.KeepUnexpired(q.Keep)
	if _, _, err := r.readTopic(c, topic); err != nil {
		return err
	}
	recs, next, err := r.coord.Page(c.Request().Context(), q)
	if err != nil {
		return err
	}
	out := append(make([]byte, 0, 256*len(recs)+64), `{"contexts":[`...)
	for i, rec := range recs {
		if i > 0 {
			out = append(out, ',')
		}
		if out, err = r.codec.AppendDocumentJSON(out, rec.Value, withContent); err != nil {
			return &apierr.Error{Code: apierr.CodeInternal, Message: "a stored context cannot be decoded", Err: err}
		}
	}
	out = appendNextCursor(out, next, prefix)
	return c.JSONBlob(http.StatusOK, out)
}
