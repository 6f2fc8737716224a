package router

import (
	"encoding/json"
	"slices"
)

// duplicateKey returns the first key that appears twice in one object of
// body, which must be valid JSON in valid UTF-8 (decodeJSON checks both
// first). encoding/json keeps the last of two equal keys silently; two
// parsers that disagree on which one wins are how a check in one place is
// bypassed in another, so the API refuses them. Keys are compared after unescaping ("a" and "\u0061"
// are the same key). Nesting is bounded by encoding/json's own depth limit,
// which the body has already passed.
func duplicateKey(body []byte) (string, bool) {
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
