package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/docstore"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/labstack/echo/v4"
)

// errorDetail is the inside of the API's error body.
type errorDetail struct {
	Code    apierr.Code `json:"code"`
	Message string      `json:"message"`
}

// bulkResult is what became of one context of a bulk write.
type bulkResult struct {
	ID     string       `json:"id"`
	Status int          `json:"status"`         // 201 created, 200 replaced, else the error's
	ETag   string       `json:"etag,omitempty"` // once stored
	Error  *errorDetail `json:"error,omitempty"`
}

// bulkAnswer is the body of a bulk write's answer. When some context was
// not stored it carries the API's error too, and the status is that
// error's: a client that reads only the status never takes a partial
// bulk for a success.
type bulkAnswer struct {
	Error    *errorDetail `json:"error,omitempty"`
	Created  int          `json:"created"`
	Replaced int          `json:"replaced"`
	Failed   int          `json:"failed"`
	Results  []bulkResult `json:"results"`
}

// bulkContexts serves POST /api/v1/topics/{topic}/contexts/_bulk: up to
// schema.MaxBulkContexts documents written as PUTs without a condition,
// each in its own transaction, in one request. One invalid document
// refuses the bulk (400, nothing written); each result says whether its
// context was stored; writing the same bulk again is safe.
func (a *API) bulkContexts(c echo.Context) error {
	topic, err := topicParam(c)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	docs, err := withBody(a, c, func(b []byte) ([]*schema.Document, error) { return schema.DecodeBulk(b, now) })
	if err != nil {
		return err
	}
	items := make([]docstore.BulkItem, len(docs))
	for i, d := range docs {
		items[i].Doc = d
	}
	if err := a.docs.PutBulk(c.Request().Context(), topic, items); err != nil {
		return err
	}
	ans := bulkAnswer{Results: make([]bulkResult, len(items))}
	var first *apierr.Error
	for i, it := range items {
		r := &ans.Results[i]
		r.ID = it.Doc.Metadata.ID
		switch {
		case it.Err != nil:
			e := asAPIError(it.Err)
			if first == nil {
				first = e
			}
			r.Status = e.Status()
			r.Error = &errorDetail{e.Code, e.Message}
			ans.Failed++
		case it.Created:
			r.Status, r.ETag = http.StatusCreated, schema.ETag(it.Version)
			ans.Created++
		default:
			r.Status, r.ETag = http.StatusOK, schema.ETag(it.Version)
			ans.Replaced++
		}
	}
	if first == nil {
		return c.JSON(http.StatusOK, &ans)
	}
	a.log.Warn("bulk write partly failed", "topic", topic, "failed", ans.Failed, "of", len(items), "err", first.Error())
	ans.Error = &errorDetail{first.Code, fmt.Sprintf("%d of %d contexts not stored (each result says which; writing the bulk again is safe): %s", ans.Failed, len(items), first.Message)}
	return c.JSON(first.Status(), &ans)
}

// asAPIError is err as the API reports it (see handleError).
func asAPIError(err error) *apierr.Error {
	var e *apierr.Error
	if errors.As(err, &e) {
		return e
	}
	return &apierr.Error{Code: apierr.CodeInternal, Message: "internal error", Err: err}
}
