package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

type bucketRecord struct {
	bucket string
	rec    Record
}

// snapshotOf writes a snapshot of buckets, each with n records (every
// third a tombstone), and returns it with its records in order.
func snapshotOf(t testing.TB, seed string, buckets []string, n int) ([]byte, []bucketRecord) {
	t.Helper()
	var buf bytes.Buffer
	sw := NewSnapshotWriter(&buf)
	var recs []bucketRecord
	for _, b := range buckets {
		if err := sw.Bucket(b); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			r := Record{Key: fmt.Appendf(nil, "%s/%s/%04d", seed, b, i), Version: uint64(1000 + i)}
			if i%3 == 2 {
				r.Tombstone = true
			} else {
				r.Value = bytes.Repeat([]byte{byte(i)}, i%50)
			}
			if err := sw.Record(&r); err != nil {
				t.Fatal(err)
			}
			if !r.Tombstone && r.Value == nil {
				r.Value = []byte{}
			}
			recs = append(recs, bucketRecord{b, r})
		}
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), recs
}

func readAll(t testing.TB, snap []byte) ([]bucketRecord, Stats, error) {
	t.Helper()
	var got []bucketRecord
	st, err := ReadSnapshot(bytes.NewReader(snap), "test snapshot", func(b string, r Record) error {
		got = append(got, bucketRecord{b, r})
		return nil
	})
	return got, st, err
}

func TestSnapshotRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name    string
		buckets []string
		n       int
	}{
		{"empty", nil, 0},
		{"empty buckets", []string{"a", "b"}, 0},
		{"records", []string{"contexts", "topics", "vectors"}, 40},
	} {
		t.Run(tt.name, func(t *testing.T) {
			snap, want := snapshotOf(t, "s", tt.buckets, tt.n)
			got, st, err := readAll(t, snap)
			if err != nil {
				t.Fatalf("ReadSnapshot = %v, want nil", err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("records = %v, want %v", got, want)
			}
			if st.Records != int64(len(want)) {
				t.Errorf("Stats.Records = %d, want %d", st.Records, len(want))
			}
		})
	}
}

// TestSnapshotDamage cuts and flips a snapshot everywhere and checks that
// the reader never accepts the result as complete.
func TestSnapshotDamage(t *testing.T) {
	snap, _ := snapshotOf(t, "s", []string{"contexts", "topics"}, 5)
	for n := range len(snap) {
		_, _, err := readAll(t, snap[:n])
		if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("snapshot cut at %d of %d: err = %v, want ErrTruncated or ErrCorrupt", n, len(snap), err)
		}
	}
	_, _, err := readAll(t, append(bytes.Clone(snap), 0))
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("snapshot with trailing data: err = %v, want ErrCorrupt", err)
	}
	// The structure catches most flips; a flipped value byte is only
	// caught by the archive's checksums (TestArchiveDamage).
	if _, _, err := readAll(t, append([]byte("XXXX"), snap[4:]...)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("snapshot with a bad header: err = %v, want ErrCorrupt", err)
	}
}

// stream builds a backup stream of the given shards' snapshots.
func stream(t testing.TB, shards map[string][]byte, order []string, fail string) []byte {
	t.Helper()
	var buf bytes.Buffer
	sw, err := NewStreamWriter(&buf, Info{CreatedAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), Mode: "sharded", Epoch: 3, State: "stable", Replicas: 1, Shards: order})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range order {
		if name == fail {
			sw.Fail("shard " + name + " is down")
			return buf.Bytes()
		}
		if _, err := sw.Section(name, bytes.NewReader(shards[name])); err != nil {
			t.Fatal(err)
		}
	}
	sw.End()
	return buf.Bytes()
}

func testShards(t testing.TB) (map[string][]byte, []string, []bucketRecord) {
	shards := map[string][]byte{}
	order := []string{"sh-1", "sh-2", "sh-3"}
	var all []bucketRecord
	for i, name := range order {
		snap, recs := snapshotOf(t, name, []string{"contexts", "topics"}, 10*(i+1))
		shards[name] = snap
		all = append(all, recs...)
	}
	return shards, order, all
}

func TestArchiveRoundTrip(t *testing.T) {
	shards, order, want := testShards(t)
	var arc bytes.Buffer
	var progressed int64
	m, err := WriteArchive(&arc, bytes.NewReader(stream(t, shards, order, "")), func(n int64) { progressed = n })
	if err != nil {
		t.Fatalf("WriteArchive = %v, want nil", err)
	}
	if m.Records != int64(len(want)) || len(m.Sections) != 3 || m.Cluster.Epoch != 3 {
		t.Errorf("manifest = %+v, want %d records in 3 sections of epoch 3", m, len(want))
	}
	var total int64
	for _, s := range m.Sections {
		total += s.Bytes
	}
	if progressed != total {
		t.Errorf("progress ended at %d bytes, want %d", progressed, total)
	}
	vm, err := Verify(bytes.NewReader(arc.Bytes()))
	if err != nil {
		t.Fatalf("Verify = %v, want nil", err)
	}
	if !equalJSON(vm, m) {
		t.Errorf("Verify manifest = %+v, want %+v", vm, m)
	}
	var got []bucketRecord
	if _, err := ReadArchive(bytes.NewReader(arc.Bytes()), func(shard, b string, r Record) error {
		got = append(got, bucketRecord{b, r})
		return nil
	}); err != nil {
		t.Fatalf("ReadArchive = %v", err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("archive records differ from the snapshots'")
	}
}

func TestStreamReportsRemoteFailure(t *testing.T) {
	shards, order, _ := testShards(t)
	_, err := WriteArchive(io.Discard, bytes.NewReader(stream(t, shards, order, "sh-2")), nil)
	if !errors.Is(err, ErrRemote) || !strings.Contains(err.Error(), "shard sh-2 is down") {
		t.Errorf("WriteArchive of a failed stream = %v, want ErrRemote naming sh-2", err)
	}
	// A stream cut anywhere is refused too.
	s := stream(t, shards, order, "")
	for _, n := range []int{0, 5, len(s) / 3, len(s) / 2, len(s) - 1} {
		if _, err := WriteArchive(io.Discard, bytes.NewReader(s[:n]), nil); !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
			t.Errorf("WriteArchive of a stream cut at %d = %v, want ErrTruncated or ErrCorrupt", n, err)
		}
	}
}

// TestArchiveDamage checks that a truncated or corrupted archive is
// refused, wherever the damage is: in the compressed bytes, or inside a
// value, where only the checksums can see it.
func TestArchiveDamage(t *testing.T) {
	shards, order, _ := testShards(t)
	var arc bytes.Buffer
	if _, err := WriteArchive(&arc, bytes.NewReader(stream(t, shards, order, "")), nil); err != nil {
		t.Fatal(err)
	}
	good := arc.Bytes()
	for n := 0; n < len(good); n += max(1, len(good)/97) {
		if _, err := Verify(bytes.NewReader(good[:n])); !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("archive cut at %d of %d: Verify = %v, want ErrTruncated or ErrCorrupt", n, len(good), err)
		}
	}
	want := decompress(t, good)
	for i := 0; i < len(good); i += max(1, len(good)/97) {
		bad := bytes.Clone(good)
		bad[i] ^= 0x20
		if _, err := Verify(bytes.NewReader(bad)); err == nil {
			// Some bits of a zstd frame do not change what it decodes to
			// (a window size still large enough, a reserved field): that
			// damage loses nothing and Verify may let it pass. Anything
			// else must be refused.
			if got, ok := tryDecompress(bad); !ok || !bytes.Equal(got, want) {
				t.Fatalf("archive with byte %d flipped: Verify = nil, but its content changed", i)
			}
		}
	}

	// Flip one byte of a value in the uncompressed archive: the structure
	// stays sound, the section's checksum does not.
	raw := decompress(t, good)
	i := bytes.Index(raw, []byte("sh-2/contexts/0004"))
	if i < 0 {
		t.Fatal("record not found in the archive")
	}
	raw[i+len("sh-2/contexts/0004")+9+1+2] ^= 0xff // inside its value
	_, err := Verify(bytes.NewReader(compress(t, raw)))
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "section sh-2: checksum mismatch") {
		t.Errorf("archive with a value changed: Verify = %v, want a checksum mismatch of section sh-2", err)
	}
}

func decompress(t testing.TB, b []byte) []byte {
	t.Helper()
	zr, err := zstd.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tryDecompress decodes b, reporting whether it could.
func tryDecompress(b []byte) ([]byte, bool) {
	zr, err := zstd.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, false
	}
	defer zr.Close()
	out, err := io.ReadAll(zr)
	return out, err == nil
}

func compress(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw, _ := zstd.NewWriter(&out)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
