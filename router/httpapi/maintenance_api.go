package httpapi

import (
	"io"
	"mime"
	"net/http"

	"github.com/go-kvdb/go-kvdb/backup"
	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/maintenance"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/labstack/echo/v4"
)

// adminBackup serves GET /api/v1/admin/backup (see maintenance.Backup).
func (a *API) adminBackup(c echo.Context) error {
	return a.maint.Backup(c.Request().Context(), func() io.Writer {
		resp := c.Response()
		resp.Header().Set(echo.HeaderContentType, backup.ContentType)
		resp.WriteHeader(http.StatusOK)
		return resp
	})
}

// adminRestore serves POST /api/v1/admin/restore[?dry_run=true]: the body
// is a snapshot (backup.RecordsContentType) of the records to replay. The
// whole body is read and checked before anything is written, so a
// truncated or malformed body changes nothing.
func (a *API) adminRestore(c echo.Context) error {
	dry, err := boolParam(c, "dry_run")
	if err != nil {
		return err
	}
	req := c.Request()
	ct := req.Header.Get(echo.HeaderContentType)
	if mt, _, err := mime.ParseMediaType(ct); err != nil || (mt != backup.RecordsContentType && mt != echo.MIMEOctetStream) {
		return apierr.Errorf(apierr.CodeUnsupportedMediaType, "Content-Type must be %s, got %q", backup.RecordsContentType, schema.Truncate(ct))
	}
	if req.ContentLength > maintenance.MaxRestoreBody {
		return apierr.Errorf(apierr.CodePayloadTooLarge, "restore body of %d bytes exceeds the limit of %d: send the records in batches", req.ContentLength, maintenance.MaxRestoreBody)
	}
	recs, err := maintenance.ParseRestore(http.MaxBytesReader(c.Response(), req.Body, maintenance.MaxRestoreBody))
	if err != nil {
		return err
	}
	rep, err := a.maint.Restore(req.Context(), recs, dry)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, rep)
}

func (a *API) adminCompression(c echo.Context) error {
	return c.JSON(http.StatusOK, a.maint.CompressionStatus())
}

// adminTrain serves POST /api/v1/admin/compression/train[?rewrite=true].
func (a *API) adminTrain(c echo.Context) error {
	rewrite, err := boolParam(c, "rewrite")
	if err != nil {
		return err
	}
	res, err := a.maint.Train(c.Request().Context(), rewrite)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, res)
}

// boolParam reads an optional boolean query parameter, the same way on
// every route: absent or "false" is false, "true" is true, and anything
// else ("1", "yes") is invalid_argument naming the parameter, never a
// silent false.
func boolParam(c echo.Context, name string) (bool, error) {
	switch v := c.QueryParam(name); v {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, apierr.Errorf(apierr.CodeInvalidArgument, "%s %q: want true or false", name, schema.Truncate(v))
	}
}

// adminRewrite serves POST /api/v1/admin/compression/rewrite: re-encode
// every context not compressed with the current dictionary, in place at
// the same version, on every live shard. 202 starts the pass in the
// background; ?wait=true runs it and answers 200 with its outcome.
func (a *API) adminRewrite(c echo.Context) error {
	wait, err := boolParam(c, "wait")
	if err != nil {
		return err
	}
	res, started, err := a.maint.Rewrite(c.Request().Context(), wait)
	return passAnswer(c, res, started, err, "a rewrite pass is running already", "dictionary", a.codec.Current)
}

// adminReencrypt serves POST /api/v1/admin/reencrypt: re-seal every
// record not sealed with the current key (older keys, or stored before
// encryption was on) under it, on every live shard. 202 starts the pass in
// the background; ?wait=true runs it and answers 200 with its outcome.
func (a *API) adminReencrypt(c echo.Context) error {
	wait, err := boolParam(c, "wait")
	if err != nil {
		return err
	}
	res, started, err := a.maint.Reencrypt(c.Request().Context(), wait)
	return passAnswer(c, res, started, err, "a re-encrypt pass is running already", "key", func() string { return a.cfg.Security.Keyring.CurrentID() })
}

// passAnswer answers a maintenance pass's request: its error, 200 with
// the result of a pass run at once (res non-nil), else 202 saying it
// started (naming what it works with: key, from what) or that one is
// running already (busy).
func passAnswer[T, V any](c echo.Context, res *T, started bool, err error, busy, key string, what func() V) error {
	switch {
	case err != nil:
		return err
	case res != nil:
		return c.JSON(http.StatusOK, res)
	case !started:
		return c.JSON(http.StatusAccepted, map[string]any{"status": busy})
	}
	return c.JSON(http.StatusAccepted, map[string]any{"status": "started", key: what()})
}
