package httpapi

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/labstack/echo/v4"
)

// MaxHeaderBytes bounds a request's header (its request line and header
// fields): a larger one is answered 431 in the API's error shape. The API
// needs a few kilobytes (a key, a cursor, an If-Match).
const MaxHeaderBytes = 64 << 10

// ServerMaxHeaderBytes is the http.Server's own limit, set above
// MaxHeaderBytes: net/http answers a header over its limit itself, in
// plain text, before any handler runs, so it is kept out of the way of
// the API's answer and only stops what is far over (a client sending
// megabytes of header is not waited for).
const ServerMaxHeaderBytes = 2 * MaxHeaderBytes

// checkRequest refuses, on every route (and before any key is checked),
// what no route may take: a header
// over MaxHeaderBytes (431), and a query string that does not decode
// (400 naming the parameter; net/url would drop the pair silently and the
// route would answer as if it had not been sent).
func (a *API) checkRequest(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if n := headerBytes(req); n > MaxHeaderBytes {
			return shaped(c, apierr.Errorf(apierr.CodeHeaderTooLarge, "request header is %d bytes, over the limit of %d", n, MaxHeaderBytes))
		}
		if name, err := badQuery(req.URL.RawQuery); err != nil {
			return shaped(c, apierr.Errorf(apierr.CodeInvalidArgument, "query parameter %q: %v", name, err))
		}
		return next(c)
	}
}

// headerBytes is the size of req's header as it came on the wire (for
// HTTP/1: request line, each field as "Name: value\r\n", and the Host
// field, which net/http moves out of Header).
func headerBytes(req *http.Request) int {
	n := len(req.Method) + 1 + len(req.RequestURI) + 1 + len(req.Proto) + 2
	if req.Host != "" {
		n += len("Host: ") + len(req.Host) + 2
	}
	for k, vs := range req.Header {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n
}

// badQuery returns the first parameter of a raw query string that does
// not decode, named as sent when its name is what fails, and the reason.
// It only checks (no decoded copy is made unless a pair fails).
func badQuery(raw string) (string, error) {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if err := checkEscapes(k); err != nil {
			return k, err
		}
		if strings.Contains(pair, ";") {
			return paramName(k), errSemicolon
		}
		if err := checkEscapes(v); err != nil {
			return paramName(k), err
		}
	}
	return "", nil
}

// checkEscapes reports the first "%" of s not followed by two hex digits,
// as url.QueryUnescape would.
func checkEscapes(s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return url.EscapeError(s[i:min(i+3, len(s))])
		}
		i += 2
	}
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// paramName is a well-escaped parameter name decoded.
func paramName(k string) string {
	name, err := url.QueryUnescape(k)
	if err != nil {
		return k
	}
	return name
}

type queryError string

func (e queryError) Error() string { return string(e) }

// errSemicolon: net/url no longer takes ";" as a separator and drops the
// pair.
const errSemicolon = queryError(`";" is not a separator: use "&", or send it escaped as %3B`)

// shaped answers err in the shape the path's clients read: OpenAI's on the
// OpenAI API, Ollama's on the drop-in Ollama endpoint, the API's elsewhere.
func shaped(c echo.Context, err *apierr.Error) error {
	p := c.Request().URL.Path
	switch {
	case openaiShaped(p):
		return openaiError(c, err.Status(), err.Code, err.Message)
	case strings.HasPrefix(p, ollamaPrefix+"/"):
		return ollamaError(c, err.Status(), err.Message)
	}
	return err
}
