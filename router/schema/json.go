package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/go-kvdb/go-kvdb/router/apierr"
)

// DuplicateKey returns the first key that appears twice in one object of
// body, which must be valid JSON in valid UTF-8 (DecodeJSON checks both
// first). encoding/json keeps the last of two equal keys silently; two
// parsers that disagree on which one wins are how a check in one place is
// bypassed in another, so the API refuses them. Keys are compared after unescaping ("a" and "\u0061"
// are the same key). Nesting is bounded by encoding/json's own depth limit,
// which the body has already passed.
func DuplicateKey(body []byte) (string, bool) {
	type frame struct {
		object bool
		keys   []string            // most objects hold few keys: a slice beats a map
		set    map[string]struct{} // past 16 keys (a map of options, say)
	}
	var stack []frame
	expectKey := false // the next string in the current object is a key
	for i := 0; i < len(body); i++ {
		switch c := body[i]; c {
		case '{':
			stack = append(stack, frame{object: true})
			expectKey = true
		case '[':
			stack = append(stack, frame{})
			expectKey = false
		case '}', ']':
			stack = stack[:len(stack)-1]
			expectKey = false
		case ',':
			expectKey = len(stack) > 0 && stack[len(stack)-1].object
		case '"':
			end := i + 1
			escaped := false
			for ; end < len(body); end++ {
				if body[end] == '\\' {
					escaped = true
					end++
					continue
				}
				if body[end] == '"' {
					break
				}
			}
			if expectKey {
				key := string(body[i+1 : end])
				if escaped {
					var s string
					if json.Unmarshal(body[i:end+1], &s) == nil {
						key = s
					}
				}
				top := &stack[len(stack)-1]
				if top.set != nil {
					if _, dup := top.set[key]; dup {
						return key, true
					}
					top.set[key] = struct{}{}
				} else {
					if slices.Contains(top.keys, key) {
						return key, true
					}
					top.keys = append(top.keys, key)
					if len(top.keys) > 16 {
						top.set = make(map[string]struct{}, 64)
						for _, k := range top.keys {
							top.set[k] = struct{}{}
						}
						top.keys = nil
					}
				}
				expectKey = false
			}
			i = end
		}
	}
	return "", false
}

// Truncate keeps error messages short when a client sends a huge value.
func Truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// DecodeJSON decodes one JSON object into v, rejecting unknown fields and
// trailing data, and names the offending field in its error.
func DecodeJSON(body []byte, v any) error {
	if !utf8.Valid(body) {
		return apierr.Errorf(apierr.CodeInvalidArgument, "request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return apierr.Errorf(apierr.CodeInvalidArgument, "invalid JSON: data after the top-level object")
	}
	if key, dup := DuplicateKey(body); dup {
		return apierr.Errorf(apierr.CodeInvalidArgument, "invalid JSON: key %q appears twice in one object", Truncate(key))
	}
	return nil
}

func jsonError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return apierr.Errorf(apierr.CodeInvalidArgument, "invalid JSON: body must be an object, got %s", typeErr.Value)
		}
		return apierr.Errorf(apierr.CodeInvalidArgument, "field %q: got %s, want %s", field, typeErr.Value, jsonType(typeErr.Type.Kind().String()))
	case errors.As(err, &syntaxErr):
		return apierr.Errorf(apierr.CodeInvalidArgument, "invalid JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
	case errors.Is(err, io.EOF):
		return apierr.Errorf(apierr.CodeInvalidArgument, "request body is empty, want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return apierr.Errorf(apierr.CodeInvalidArgument, "invalid JSON: body ends early")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return apierr.Errorf(apierr.CodeInvalidArgument, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return apierr.Errorf(apierr.CodeInvalidArgument, "invalid JSON: %v", err)
}

func jsonType(kind string) string {
	switch kind {
	case "slice", "array":
		return "array"
	case "struct", "map":
		return "object"
	case "float32", "float64", "int", "int64", "uint64":
		return "number"
	}
	return kind
}

// TopicJSON renders a topic for the API and for storage.
func TopicJSON(t *Topic) []byte { return MustJSON(t) }

// MustJSON is json.Marshal for values that cannot fail to MustJSON (structs
// of strings, numbers and slices of them).
func MustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("MustJSON %T: %v", v, err))
	}
	return b
}

// PrintableKey renders a storage key for a message: quoted, the topic and
// id separator shown as "/", cut short.
func PrintableKey(k []byte) string {
	return Truncate(strings.ReplaceAll(fmt.Sprintf("%q", k), `\x00`, "/"))
}
