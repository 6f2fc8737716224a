package langchaingo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Reserved metadata keys.
const (
	// IDKey holds, in every document SimilaritySearch returns, the id of
	// its context (what AddDocuments returned for it). It is ignored on
	// write.
	IDKey = "kvdb_id"
	// TagsKey holds a document's plain tags, a list of strings: each is
	// stored as a tag of its own, as a REST client would write it.
	TagsKey = "tags"
)

// The router's limits on tags (README, "Contexts").
const (
	maxTags   = 64
	maxTagLen = 128
)

// encodeMetadata turns a document's metadata into the tags of its
// context: every entry but TagsKey and IDKey becomes one tag
// key=<the value as compact JSON>, TagsKey's strings are tags as they are.
// Tags are what the router filters a search with (all must match), so an
// exact-match filter on metadata is a search for the same tags. Keys are
// taken in sorted order, so equal metadata gives equal tags.
func encodeMetadata(md map[string]any, what string) ([]string, error) {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var tags []string
	for _, k := range keys {
		v := md[k]
		switch {
		case k == IDKey:
			continue
		case k == TagsKey:
			plain, ok := stringList(v)
			if !ok {
				return nil, fmt.Errorf("%s %q: got %T, want a list of strings", what, k, v)
			}
			for _, t := range plain {
				if t == "" || len(t) > maxTagLen || strings.Contains(t, "=") {
					return nil, fmt.Errorf("%s %q: tag %q: want 1 to %d bytes without '='", what, k, truncate(t), maxTagLen)
				}
			}
			tags = append(tags, plain...)
		case k == "" || strings.Contains(k, "="):
			return nil, fmt.Errorf("%s key %q: want a non-empty key without '='", what, truncate(k))
		default:
			b, err := compactJSON(v)
			if err != nil {
				return nil, fmt.Errorf("%s %q: %w", what, k, err)
			}
			tag := k + "=" + string(b)
			if len(tag) > maxTagLen {
				return nil, fmt.Errorf("%s %q: %d bytes as the tag %q, at most %d", what, k, len(tag), truncate(tag), maxTagLen)
			}
			tags = append(tags, tag)
		}
	}
	if len(tags) > maxTags {
		return nil, fmt.Errorf("%s: %d tags, at most %d", what, len(tags), maxTags)
	}
	return tags, nil
}

// decodeTags is the inverse of encodeMetadata: a tag key=<JSON> is the
// entry key, any other tag goes to TagsKey.
func decodeTags(tags []string) map[string]any {
	md := make(map[string]any, len(tags)+1)
	var plain []string
	for _, t := range tags {
		if k, raw, ok := strings.Cut(t, "="); ok && k != "" {
			var v any
			if json.Unmarshal([]byte(raw), &v) == nil {
				md[k] = v
				continue
			}
		}
		plain = append(plain, t)
	}
	if plain != nil {
		md[TagsKey] = plain
	}
	return md
}

// compactJSON encodes v as compact JSON, without HTML escaping so a tag
// reads as it was written.
func compactJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func stringList(v any) ([]string, bool) {
	switch l := v.(type) {
	case []string:
		return l, true
	case []any:
		out := make([]string, len(l))
		for i, x := range l {
			s, ok := x.(string)
			if !ok {
				return nil, false
			}
			out[i] = s
		}
		return out, true
	}
	return nil, false
}

// filterTags turns vectorstores.WithFilters' value into the tags a search
// requires: a map of metadata values, encoded as encodeMetadata does.
func filterTags(f any) ([]string, error) {
	var md map[string]any
	switch m := f.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		md = m
	case map[string]string:
		md = make(map[string]any, len(m))
		for k, v := range m {
			md[k] = v
		}
	default:
		return nil, fmt.Errorf("%w: got %T, want map[string]any of metadata values", ErrInvalidFilter, f)
	}
	if _, ok := md[IDKey]; ok {
		return nil, fmt.Errorf("%w: %q cannot be filtered on", ErrInvalidFilter, IDKey)
	}
	tags, err := encodeMetadata(md, "filter")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidFilter, err)
	}
	return tags, nil
}
