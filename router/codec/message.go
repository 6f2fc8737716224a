package codec

import (
	"encoding/json"
	"fmt"

	"github.com/go-kvdb/go-kvdb/router/schema"
)

// A stored message record (schema.BucketMessages) is
//
//	format (1) | codec (1) | uvarint len body | body
//
// where body is the message JSON {"role","content"} (its seq is its key),
// compressed as a context's body is (AppendBody: zstd when it saves space,
// with the current dictionary when there is one). A message is read
// whole, so nothing of it stays uncompressed.
const messageFormatV1 = 1

// storedMessage is what a message record's body holds.
type storedMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// EncodeMessage turns a validated message into its stored record value.
func (c *Codec) EncodeMessage(m schema.Message) ([]byte, error) {
	body, err := json.Marshal(storedMessage{Role: m.Role, Content: m.Content})
	if err != nil {
		return nil, fmt.Errorf("marshal message: %w", err)
	}
	out := make([]byte, 0, 2+len(body)+10)
	out = append(out, messageFormatV1)
	return c.AppendBody(out, body), nil
}

// DecodeMessage reads a stored message record back (without its seq,
// which is its key's).
func (c *Codec) DecodeMessage(v []byte) (schema.Message, error) {
	if len(v) < 2 || v[0] != messageFormatV1 {
		return schema.Message{}, fmt.Errorf("%w: unknown message format", ErrCorrupt)
	}
	s := storedDoc{codec: v[1]}
	if s.codec != codecRaw && s.codec != codecZstd && s.codec != codecZstdDict {
		return schema.Message{}, fmt.Errorf("%w: unknown Codec %d", ErrCorrupt, s.codec)
	}
	body, rest, ok := cutUvarint(v[2:])
	if !ok || len(rest) != 0 {
		return schema.Message{}, fmt.Errorf("%w: message body", ErrCorrupt)
	}
	s.body = body
	js, err := c.contentJSON(s)
	if err != nil {
		return schema.Message{}, err
	}
	var m storedMessage
	if err := json.Unmarshal(js, &m); err != nil {
		return schema.Message{}, fmt.Errorf("%w: message: %v", ErrCorrupt, err)
	}
	return schema.Message{Role: m.Role, Content: m.Content}, nil
}
