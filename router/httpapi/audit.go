package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/labstack/echo/v4"
)

// auditLog writes one JSON line per mutating request and per refused key.
// A mutation's line is written from the response's Before hook: after the
// handler has decided the status, before the status line and headers go
// out. So a client never holds an acknowledgement of a change that is not
// in the trail (the line reaches the file with one write(2); it is not
// fsynced, so a machine crash may lose the last lines, not a process crash).
type auditLog struct {
	log *slog.Logger // reports failures to write

	// mu serialises lines, so concurrent requests never interleave.
	mu sync.Mutex
	w  io.Writer
}

// AuditLine is the trail's record. It never holds a secret: a key is
// named by the name the auth file gives it.
type AuditLine struct {
	Time      string `json:"time"`
	Event     string `json:"event"` // "mutation" or "auth_failure"
	Key       string `json:"key,omitempty"`
	ClientIP  string `json:"client_ip"`
	Method    string `json:"method"`
	Route     string `json:"route"`
	Path      string `json:"path"`
	Topic     string `json:"topic,omitempty"`
	Context   string `json:"context_id,omitempty"`
	Tool      string `json:"tool,omitempty"` // the MCP tool called
	Status    int    `json:"status"`
	RequestID string `json:"request_id"`
}

func (a *auditLog) write(l *AuditLine) {
	b, err := json.Marshal(l)
	if err != nil {
		return // a struct of strings and ints always marshals
	}
	b = append(b, '\n')
	a.mu.Lock()
	_, err = a.w.Write(b)
	a.mu.Unlock()
	if err != nil {
		a.log.Error("audit log write failed", "err", err, "request_id", l.RequestID)
	}
}

// record writes the request's line if it is one the trail keeps: a
// mutation (whatever its outcome) or a refused key.
func (a *auditLog) record(c echo.Context, ri *reqInfo, status int) {
	event := ""
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		event = "auth_failure"
	case ri.mutating:
		event = "mutation"
	default:
		return
	}
	req := c.Request()
	route := c.Path()
	if unrouted(c) {
		route = ""
	}
	a.write(&AuditLine{
		Time:      time.Now().UTC().Format(time.RFC3339Nano),
		Event:     event,
		Key:       ri.key.Label(),
		ClientIP:  ri.ip,
		Method:    req.Method,
		Route:     route,
		Path:      schema.Truncate(req.URL.EscapedPath()),
		Topic:     schema.Truncate(ri.topic),
		Context:   schema.Truncate(ri.id),
		Status:    status,
		RequestID: ri.reqID,
	})
}

// requestID returns the client's X-Request-Id when it is a sane token
// (printable ASCII without spaces, at most 128 bytes), else a new one.
func requestID(h string) string {
	if len(h) > 0 && len(h) <= 128 {
		ok := true
		for i := 0; i < len(h); i++ {
			if h[i] <= ' ' || h[i] > '~' || h[i] == '"' || h[i] == '\\' {
				ok = false
				break
			}
		}
		if ok {
			return h
		}
	}
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
