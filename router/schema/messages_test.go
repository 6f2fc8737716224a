package schema

import (
	"bytes"
	"slices"
	"testing"
)

// TestMessageKeys checks the layout of message keys: placed with their
// context, one ordered range per conversation, disjoint from any other
// context's, and read back to their seq.
func TestMessageKeys(t *testing.T) {
	for _, c := range []struct{ topic, id string }{{"t", "c"}, {"chat", "a:b.c"}, {"t", "c1"}} {
		for _, seq := range []uint64{1, 255, 256, 1 << 40} {
			k := MessageKey(c.topic, c.id, seq)
			if got, want := PlacementOf(k), Placement(c.topic, c.id); got != want {
				t.Errorf("PlacementOf(MessageKey(%q, %q, %d)) = %q, want %q", c.topic, c.id, seq, got, want)
			}
			if got, ok := MessageSeq(MessagePrefix(c.topic, c.id), k); !ok || got != seq {
				t.Errorf("MessageSeq(MessageKey(%q, %q, %d)) = %d, %v", c.topic, c.id, seq, got, ok)
			}
		}
	}
	// The context's own key is placed as before.
	if got := PlacementOf([]byte(ContextKey("t", "c"))); got != "t/c" {
		t.Errorf("PlacementOf(ContextKey(t, c)) = %q, want t/c", got)
	}
	// Keys sort by seq; context c's range does not hold context c1's.
	keys := [][]byte{MessageKey("t", "c", 256), MessageKey("t", "c", 2), MessageKey("t", "c", 1)}
	slices.SortFunc(keys, bytes.Compare)
	for i, want := range []uint64{1, 2, 256} {
		if got, _ := MessageSeq(MessagePrefix("t", "c"), keys[i]); got != want {
			t.Errorf("sorted key %d has seq %d, want %d", i, got, want)
		}
	}
	if bytes.HasPrefix(MessageKey("t", "c1", 1), MessagePrefix("t", "c")) {
		t.Errorf("MessageKey(t, c1, 1) is under MessagePrefix(t, c)")
	}
	if _, ok := MessageSeq(MessagePrefix("t", "c"), MessageKey("t", "c1", 1)); ok {
		t.Errorf("MessageSeq read context c1's key under c's prefix")
	}
}
