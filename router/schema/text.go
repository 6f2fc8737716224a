package schema

import "strings"

// MaxIndexText bounds the bytes of a context's words sent for keyword
// indexing: the first ones are kept (a long conversation's later turns are
// also its own messages, indexed at message scope).
const MaxIndexText = 1 << 20

// IndexText is what keyword search finds a context by: its content.text
// and the contents of its messages (roles and tool output left out), one
// per line. It is empty for a context of embeddings only.
func IndexText(d *Document) string {
	var b strings.Builder
	b.WriteString(d.Content.Text)
	for _, m := range d.Content.Messages {
		if m.Role == "tool" || m.Content == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(m.Content)
		if b.Len() >= MaxIndexText {
			break
		}
	}
	s := b.String()
	if len(s) > MaxIndexText {
		s = strings.ToValidUTF8(s[:MaxIndexText], "")
	}
	return s
}
