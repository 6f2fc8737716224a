package httpapi

import (
	"net/http"
	"strconv"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/docstore"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/labstack/echo/v4"
)

const (
	defaultPageLimit = 100
	maxPageLimit     = 1000
)

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

func (a *API) listTopics(c echo.Context) error {
	limit, err := pageLimit(c)
	if err != nil {
		return err
	}
	prefix := c.QueryParam("prefix")
	if !validPrefix(prefix) {
		return apierr.Errorf(apierr.CodeInvalidArgument, "prefix %q cannot begin a topic name", schema.Truncate(prefix))
	}
	var after string
	if cur := c.QueryParam("cursor"); cur != "" {
		if after, err = schema.DecodeCursor(cur, schema.ValidName); err != nil {
			return err
		}
	}
	out, err := a.docs.ListTopics(c.Request().Context(), prefix, after, limit, a.topicFilter(c))
	if err != nil {
		return err
	}
	return c.JSONBlob(http.StatusOK, out)
}

func (a *API) listContexts(c echo.Context) error {
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
	f := docstore.ContextFilter{Tags: c.QueryParams()["tag"], Model: c.QueryParam("model")}
	for _, t := range f.Tags {
		if t == "" || len(t) > schema.MaxTagLen {
			return apierr.Errorf(apierr.CodeInvalidArgument, "tag %q: a tag has 1 to %d bytes", schema.Truncate(t), schema.MaxTagLen)
		}
	}
	if len(f.Model) > schema.MaxModelLen {
		return apierr.Errorf(apierr.CodeInvalidArgument, "model: longer than %d bytes", schema.MaxModelLen)
	}
	var after string
	if cur := c.QueryParam("cursor"); cur != "" {
		if after, err = schema.DecodeCursor(cur, schema.ValidID); err != nil {
			return err
		}
	}
	out, err := a.docs.ListContexts(c.Request().Context(), topic, after, limit, withContent, f)
	if err != nil {
		return err
	}
	return c.JSONBlob(http.StatusOK, out)
}
