package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/klauspost/compress/zstd"
)

// FormatVersion is the archive format this package writes and reads.
const FormatVersion = 1

// Manifest describes an archive; it is written last, once the checksums
// are known.
type Manifest struct {
	Format     int       `json:"format"`
	CreatedAt  time.Time `json:"created_at"` // when the archive was written
	Cluster    Info      `json:"cluster"`
	Sections   []Section `json:"sections"`
	Records    int64     `json:"records"`
	Tombstones int64     `json:"tombstones"`
	// SHA256 is the checksum of the archive's uncompressed bytes before
	// the manifest: its header and every section, framing included.
	SHA256 string `json:"sha256"`
}

// Section describes one shard's snapshot in an archive.
type Section struct {
	Shard      string           `json:"shard"`
	Records    int64            `json:"records"`
	Tombstones int64            `json:"tombstones"`
	Buckets    map[string]int64 `json:"buckets"`
	Bytes      int64            `json:"bytes"`  // of the snapshot
	SHA256     string           `json:"sha256"` // of the snapshot
}

// WriteArchive reads a backup stream from src and writes it to w as a
// zstd-compressed archive, checking every snapshot as it passes, and
// returns the manifest it ended with. progress, when not nil, is called
// with the snapshot bytes copied so far. An error leaves w incomplete: write to
// a temporary file and rename it once WriteArchive succeeds.
func WriteArchive(w io.Writer, src io.Reader, progress func(bytes int64)) (*Manifest, error) {
	sr, err := NewStreamReader(src)
	if err != nil {
		return nil, err
	}
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	defer zw.Close()
	whole := sha256.New()
	fw := frameWriter{w: io.MultiWriter(zw, whole)}
	fw.write([]byte(archiveMagic))
	info, _ := json.Marshal(sr.Info())
	fw.frame(frameInfo, info)
	m := &Manifest{Format: FormatVersion, Cluster: sr.Info()}
	var copied int64
	for {
		name, data, err := sr.NextSection()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		src := io.Reader(data)
		if progress != nil {
			src = &byteProgress{r: data, fn: func(n int64) { progress(copied + n) }}
		}
		stats, n, err := fw.section(name, src, h)
		if err != nil {
			return nil, err
		}
		if data.Records() != stats.Records {
			return nil, fmt.Errorf("backup stream: %w: section %s: %d records, the router counted %d", ErrCorrupt, name, stats.Records, data.Records())
		}
		copied += n
		m.Sections = append(m.Sections, Section{Shard: name, Records: stats.Records, Tombstones: stats.Tombstones,
			Buckets: stats.Buckets, Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))})
		m.Records += stats.Records
		m.Tombstones += stats.Tombstones
	}
	if err := sr.End(); err != nil {
		return nil, err
	}
	if fw.err != nil {
		return nil, fw.err
	}
	m.SHA256 = hex.EncodeToString(whole.Sum(nil))
	m.CreatedAt = time.Now().UTC()
	mj, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(mj)
	fw.w = zw // the manifest is not part of what it checksums
	fw.frame(frameManifest, mj)
	fw.write(sum[:])
	if fw.err != nil {
		return nil, fw.err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return m, nil
}

// byteProgress reports, at each read, how many bytes passed.
type byteProgress struct {
	r  io.Reader
	n  int64
	fn func(int64)
}

func (p *byteProgress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	p.fn(p.n)
	return n, err
}

// Verify reads a whole archive and checks its structure, counts and
// checksums. It returns the manifest of a sound archive.
func Verify(r io.Reader) (*Manifest, error) { return ReadArchive(r, nil) }

// ReadArchive reads an archive, checking it as it goes, and calls fn (when
// not nil) for each record. The checksums are compared only at the end,
// so fn may see records of an archive that turns out bad: a caller that
// must not act on a bad archive runs Verify first.
func ReadArchive(r io.Reader, fn func(shard, bucket string, rec Record) error) (*Manifest, error) {
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	defer zr.Close()
	whole := sha256.New()
	sr, err := newStreamReader(zstdErrors{zr}, archiveMagic, "archive", whole)
	if err != nil {
		return nil, err
	}
	var got []Section
	for {
		name, data, err := sr.NextSection()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		cw := &countWriter{w: h}
		stats, err := ReadSnapshot(io.TeeReader(data, cw), "archive: section "+name, func(bucket string, rec Record) error {
			if fn == nil {
				return nil
			}
			return fn(name, bucket, rec)
		})
		if err != nil {
			return nil, err
		}
		if data.Records() != stats.Records {
			return nil, fmt.Errorf("archive: %w: section %s holds %d records, its end frame says %d", ErrCorrupt, name, stats.Records, data.Records())
		}
		got = append(got, Section{Shard: name, Records: stats.Records, Tombstones: stats.Tombstones, Buckets: stats.Buckets,
			Bytes: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))})
	}
	if sr.last != frameManifest {
		return nil, fmt.Errorf("archive: %w: a backup stream, not an archive", ErrCorrupt)
	}
	sum := hex.EncodeToString(whole.Sum(nil))
	sr.fr.h = nil
	sr.fr.ReadByte() // 'M'
	mj, err := sr.fr.payload(maxManifest, "the manifest")
	if err != nil {
		return nil, err
	}
	var msum [sha256.Size]byte
	if _, err := io.ReadFull(&sr.fr, msum[:]); err != nil {
		return nil, sr.fr.ioErr(err, "the manifest's checksum")
	}
	if _, err := sr.fr.br.ReadByte(); !errors.Is(err, io.EOF) {
		if err == nil {
			return nil, fmt.Errorf("archive: %w: data after the manifest", ErrCorrupt)
		}
		return nil, sr.fr.ioErr(err, "the end")
	}
	if sha256.Sum256(mj) != msum {
		return nil, fmt.Errorf("archive: %w: the manifest's checksum does not match", ErrCorrupt)
	}
	var m Manifest
	if err := json.Unmarshal(mj, &m); err != nil {
		return nil, fmt.Errorf("archive: %w: manifest: %v", ErrCorrupt, err)
	}
	if m.Format != FormatVersion {
		return nil, fmt.Errorf("archive: format %d, this program reads format %d", m.Format, FormatVersion)
	}
	if err := m.check(sr.Info(), got, sum); err != nil {
		return nil, fmt.Errorf("archive: %w: %v", ErrCorrupt, err)
	}
	return &m, nil
}

// check compares the manifest with what the archive holds.
func (m *Manifest) check(info Info, got []Section, sum string) error {
	if !equalJSON(m.Cluster, info) {
		return errors.New("the manifest's cluster differs from the archive's header")
	}
	if len(m.Sections) != len(got) {
		return fmt.Errorf("the manifest lists %d sections, the archive holds %d", len(m.Sections), len(got))
	}
	var records, tombs int64
	for i, s := range m.Sections {
		g := got[i]
		switch {
		case s.Shard != g.Shard:
			return fmt.Errorf("section %d is shard %s, the manifest says %s", i, g.Shard, s.Shard)
		case s.SHA256 != g.SHA256:
			return fmt.Errorf("section %s: checksum mismatch (sha256 %s, the manifest says %s)", s.Shard, g.SHA256, s.SHA256)
		case s.Records != g.Records || s.Tombstones != g.Tombstones || s.Bytes != g.Bytes:
			return fmt.Errorf("section %s: %d records (%d tombstones) in %d bytes, the manifest says %d (%d) in %d",
				s.Shard, g.Records, g.Tombstones, g.Bytes, s.Records, s.Tombstones, s.Bytes)
		}
		records += g.Records
		tombs += g.Tombstones
	}
	if records != m.Records || tombs != m.Tombstones {
		return fmt.Errorf("%d records (%d tombstones), the manifest says %d (%d)", records, tombs, m.Records, m.Tombstones)
	}
	if sum != m.SHA256 {
		return fmt.Errorf("checksum mismatch (sha256 %s, the manifest says %s)", sum, m.SHA256)
	}
	return nil
}

// zstdErrors names the decoder's failures: running out of input is
// truncation, anything else it refuses is corruption.
type zstdErrors struct{ r io.Reader }

func (z zstdErrors) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
	switch {
	case err == nil, errors.Is(err, io.EOF):
	case errors.Is(err, io.ErrUnexpectedEOF):
		err = fmt.Errorf("%w: the compressed data ends early", ErrTruncated)
	default:
		err = fmt.Errorf("%w: decompress: %v", ErrCorrupt, err)
	}
	return n, err
}

// equalJSON reports whether two values marshal alike.
func equalJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}
