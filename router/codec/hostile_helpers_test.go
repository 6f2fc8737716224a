package codec

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// zstdBombRecord is a stored context whose body is a zstd stream (no size
// in its header) that decompresses to n zero bytes: a few KB that would
// become n in memory if the decoder had no cap.
func zstdBombRecord(t testing.TB, n int) []byte {
	t.Helper()
	var z bytes.Buffer
	w, err := zstd.NewWriter(&z, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for done := 0; done < n; done += len(chunk) {
		if _, err := w.Write(chunk[:min(len(chunk), n-done)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	meta := []byte(`{"id":"bomb"}`)
	out := []byte{formatV1}
	out = binary.AppendUvarint(out, uint64(len(meta)))
	out = append(out, meta...)
	out = append(out, Zstd)
	out = binary.AppendUvarint(out, uint64(z.Len()))
	out = append(out, z.Bytes()...)
	return binary.AppendUvarint(out, 0)
}
