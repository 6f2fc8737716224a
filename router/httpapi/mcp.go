package httpapi

import (
	"mime"
	"net/http"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/mcpserver"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/labstack/echo/v4"
)

// mcpPath is where the MCP server answers (streamable HTTP).
const mcpPath = "/mcp"

// mcpHandler serves the MCP server under the security middleware: the
// request's key (nil when the API runs open) goes down to the tools, which
// check it per tool; each tool call that changes data, or is refused, gets
// its own audit line, as a REST write does.
func (a *API) mcpHandler(c echo.Context) error {
	if err := a.mcpRequest(c.Request()); err != nil {
		return err
	}
	ri := infoOf(c)
	caller := mcpserver.Caller{Denied: func(reason string) { a.sec.authFailures.WithLabelValues(reason).Inc() }}
	if ri != nil {
		caller.Key = ri.key
		if a.sec.audit != nil {
			caller.Record = func(call mcpserver.Call) { a.auditTool(c, ri, call) }
		}
	}
	req := c.Request()
	a.mcp.Handler().ServeHTTP(c.Response(), req.WithContext(mcpserver.WithCaller(req.Context(), caller)))
	return nil
}

// mcpRequest refuses, in the API's error shape, what the SDK's handler
// would refuse in plain text: another method than POST (the server is
// stateless: no GET stream, no DELETE of a session), another media type,
// a body declared larger than the API's limit. (A chunked body over the
// limit is cut by the SDK, which answers 413 in plain text.)
func (a *API) mcpRequest(req *http.Request) error {
	if req.Method != http.MethodPost {
		return apierr.Errorf(apierr.CodeMethodNotAllowed, "the MCP server is stateless: send every message with POST")
	}
	ct := req.Header.Get(echo.HeaderContentType)
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != echo.MIMEApplicationJSON {
		return apierr.Errorf(apierr.CodeUnsupportedMediaType, "Content-Type must be application/json, got %q", schema.Truncate(ct))
	}
	if req.ContentLength > a.cfg.MaxBodyBytes {
		return apierr.Errorf(apierr.CodePayloadTooLarge, "request body of %d bytes exceeds the limit of %d", req.ContentLength, a.cfg.MaxBodyBytes)
	}
	return nil
}

// auditTool writes the audit line of an MCP tool call that changed data
// (whatever its outcome) or was refused.
func (a *API) auditTool(c echo.Context, ri *reqInfo, call mcpserver.Call) {
	event := "mutation"
	switch {
	case call.Status == http.StatusUnauthorized || call.Status == http.StatusForbidden:
		event = "auth_failure"
	case !call.Mutating:
		return
	}
	a.sec.audit.write(&AuditLine{
		Time:      time.Now().UTC().Format(time.RFC3339Nano),
		Event:     event,
		Key:       ri.key.Label(),
		ClientIP:  ri.ip,
		Method:    c.Request().Method,
		Route:     mcpPath,
		Path:      mcpPath,
		Topic:     call.Topic,
		Context:   call.ID,
		Tool:      call.Tool,
		Status:    call.Status,
		RequestID: ri.reqID,
	})
}
