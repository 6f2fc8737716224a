package codec

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/router/schema"
)

func TestMessageRoundTrip(t *testing.T) {
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []schema.Message{
		{Role: "user", Content: "hi"},
		{Role: "assistant", Content: strings.Repeat("a long answer, compressed ", 40)},
		{Role: "tool", Content: "ünïcode \"quoted\" <b>&</b>"},
	} {
		v, err := c.EncodeMessage(schema.Message{Role: m.Role, Content: m.Content, Seq: 9})
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Content) > 500 && v[1] == codecRaw {
			t.Errorf("a %d-byte message was stored raw", len(m.Content))
		}
		got, err := c.DecodeMessage(v)
		if err != nil || got != m {
			t.Errorf("DecodeMessage(EncodeMessage(%q)) = %+v, %v (the seq is the key's, not stored)", m.Content, got, err)
		}
		for _, bad := range [][]byte{nil, {messageFormatV1}, append([]byte{7}, v[1:]...), {messageFormatV1, 9, 0}, v[:len(v)-1], append(bytes.Clone(v), 0)} {
			if _, err := c.DecodeMessage(bad); !errors.Is(err, ErrCorrupt) {
				t.Errorf("DecodeMessage(%x) = %v, want ErrCorrupt", bad, err)
			}
		}
	}
}

// TestConversationHeader: a records-format context stores its header
// beside its content, renders without it (and without messages), and
// gives it back; an inline one has none.
func TestConversationHeader(t *testing.T) {
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := &schema.Document{Metadata: schema.Metadata{ID: "c", CreatedAt: "2024-01-01T00:00:00Z"}, Content: schema.Content{
		Text:         strings.Repeat("notes ", 40),
		Messages:     []schema.Message{{Role: "user", Content: "not stored here", Seq: 7}},
		Conversation: &schema.Conversation{Last: 7, Idem: []schema.IdemEntry{{Key: "k", First: 6, Last: 7, At: 1}}},
	}}
	v, err := c.EncodeDocument(d)
	if err != nil {
		t.Fatal(err)
	}
	conv, err := c.ConversationOf(v)
	if err != nil || conv == nil || conv.Last != 7 || len(conv.Idem) != 1 || conv.Idem[0].Key != "k" {
		t.Fatalf("ConversationOf = %+v, %v", conv, err)
	}
	body, err := c.AppendDocumentJSON(nil, v, true)
	if err != nil || bytes.Contains(body, []byte("_conv")) || bytes.Contains(body, []byte("not stored here")) || !bytes.Contains(body, []byte("notes")) {
		t.Errorf("rendered header = %s, %v; want the text, no header, no messages", body, err)
	}
	back, err := c.DecodeDocument(v)
	if err != nil || back.Content.Conversation == nil || back.Content.Conversation.Last != 7 || len(back.Content.Messages) != 0 {
		t.Errorf("DecodeDocument = %+v, %v", back, err)
	}
	full, err := c.AppendDocumentWithMessages(nil, v, []schema.Message{{Role: "user", Content: "a", Seq: 1}})
	if err != nil || !bytes.Contains(full, []byte(`"messages":[{"role":"user","content":"a","seq":1}]`)) || bytes.Contains(full, []byte("_conv")) {
		t.Errorf("AppendDocumentWithMessages = %s, %v", full, err)
	}

	d.Content.Conversation = nil
	v, err = c.EncodeDocument(d)
	if err != nil {
		t.Fatal(err)
	}
	if conv, err := c.ConversationOf(v); conv != nil || err != nil {
		t.Errorf("ConversationOf(inline) = %+v, %v, want none", conv, err)
	}
}
