package codec

import (
	"strings"
	"testing"
)

// TestCodecRefusesDecompressionBomb: a stored body that inflates past the
// codec's cap is refused with an error, whatever its header claims.
func TestCodecRefusesDecompressionBomb(t *testing.T) {
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	bomb := zstdBombRecord(t, maxDecoded+(4<<20))
	if len(bomb) > 1<<20 {
		t.Fatalf("the bomb is %d bytes: not a bomb", len(bomb))
	}
	if _, err := c.AppendDocumentJSON(nil, bomb, true); err == nil {
		t.Errorf("appendDocumentJSON(bomb) = nil, want an error")
	}
	if _, err := c.DecodeDocument(bomb); err == nil {
		t.Errorf("DecodeDocument(bomb) = nil, want an error")
	}
	// Metadata alone never inflates anything.
	if m, _, err := DecodeMetadata(bomb); err != nil || m.ID != "bomb" {
		t.Errorf("DecodeMetadata(bomb) = %+v, %v", m, err)
	}
	// Below the cap the same construction decodes (the test builds real
	// zstd streams).
	small := zstdBombRecord(t, 1<<20)
	if _, err := c.AppendDocumentJSON(nil, small, true); err == nil || !strings.Contains(err.Error(), "not an object") {
		t.Errorf("appendDocumentJSON(1 MiB of zeros) = %v, want it decompressed then refused as not an object", err)
	}
}
