package backup

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"
)

const (
	streamMagic  = "KVDBBAK1"
	archiveMagic = "KVDBARC1"

	frameInfo       = 'I'
	frameSection    = 'S'
	frameData       = 'D'
	frameSectionEnd = 'Z'
	frameEnd        = 'E'
	frameError      = 'X'
	frameManifest   = 'M'

	maxInfo     = 1 << 20
	maxChunk    = 4 << 20
	maxMessage  = 64 << 10
	maxName     = 1024
	maxManifest = 16 << 20
)

// ContentType is the media type of the backup stream.
const ContentType = "application/x-kvdb-backup"

// RecordsContentType is the media type of a restore request body: a
// snapshot of the records to replay.
const RecordsContentType = "application/x-kvdb-records"

// Info is the cluster's shape when a backup was taken.
type Info struct {
	CreatedAt time.Time `json:"created_at"`
	Mode      string    `json:"mode"`
	Epoch     uint64    `json:"epoch"`
	State     string    `json:"state"`
	Replicas  int       `json:"replicas"`
	Shards    []string  `json:"shards"` // the sections, in order
}

// ---- writing ----

// frameWriter writes frames; the first error sticks.
type frameWriter struct {
	w   io.Writer
	buf []byte
	err error
}

func (f *frameWriter) write(b []byte) {
	if f.err == nil {
		_, f.err = f.w.Write(b)
	}
}

// frame writes kind and a length-prefixed payload.
func (f *frameWriter) frame(kind byte, payload []byte) {
	f.buf = append(f.buf[:0], kind)
	f.buf = binary.AppendUvarint(f.buf, uint64(len(payload)))
	f.write(f.buf)
	f.write(payload)
}

func (f *frameWriter) kindUvarint(kind byte, v uint64) {
	f.buf = binary.AppendUvarint(append(f.buf[:0], kind), v)
	f.write(f.buf)
}

// Write frames p as one data chunk: frameWriter is the io.Writer a
// section's snapshot is copied into.
func (f *frameWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, f.err
	}
	f.frame(frameData, p)
	if f.err != nil {
		return 0, f.err
	}
	return len(p), nil
}

// section copies one snapshot from src into a section called name,
// checking it as it goes, and returns its counts; extra, when not nil,
// also receives the snapshot's bytes.
func (f *frameWriter) section(name string, src io.Reader, extra io.Writer) (Stats, int64, error) {
	f.frame(frameSection, []byte(name))
	cw := &countWriter{w: f}
	var dst io.Writer = cw
	if extra != nil {
		dst = io.MultiWriter(cw, extra)
	}
	stats, err := ReadSnapshot(io.TeeReader(src, dst), "snapshot of shard "+name, nil)
	if err == nil {
		err = f.err
	}
	if err != nil {
		return stats, cw.n, err
	}
	f.kindUvarint(frameSectionEnd, uint64(stats.Records))
	return stats, cw.n, f.err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// StreamWriter writes a backup stream: NewStreamWriter, a Section per
// shard, then End; or Fail when a shard cannot be read, after which the
// stream is over.
type StreamWriter struct {
	fw frameWriter
}

// NewStreamWriter starts a backup stream of a cluster shaped as info.
func NewStreamWriter(w io.Writer, info Info) (*StreamWriter, error) {
	s := &StreamWriter{fw: frameWriter{w: w}}
	s.fw.write([]byte(streamMagic))
	b, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	s.fw.frame(frameInfo, b)
	return s, s.fw.err
}

// Section relays one shard's snapshot, checking its structure and counts
// as it passes. An error leaves the stream mid-section: call Fail.
func (s *StreamWriter) Section(shard string, snapshot io.Reader) (Stats, error) {
	st, _, err := s.fw.section(shard, snapshot, nil)
	return st, err
}

// Fail ends the stream with an error the reader reports as ErrRemote.
func (s *StreamWriter) Fail(msg string) error {
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
	}
	s.fw.err = nil // a failed section left an error behind; say why anyway
	s.fw.frame(frameError, []byte(msg))
	return s.fw.err
}

// End ends a complete stream.
func (s *StreamWriter) End() error {
	s.fw.write([]byte{frameEnd})
	return s.fw.err
}

// ---- reading ----

// frameReader reads frames, hashing what it consumes while h is set.
type frameReader struct {
	br   *bufio.Reader
	h    hash.Hash
	what string
}

func (f *frameReader) ReadByte() (byte, error) {
	b, err := f.br.ReadByte()
	if err == nil && f.h != nil {
		f.h.Write([]byte{b})
	}
	return b, err
}

func (f *frameReader) Read(p []byte) (int, error) {
	n, err := f.br.Read(p)
	if n > 0 && f.h != nil {
		f.h.Write(p[:n])
	}
	return n, err
}

func (f *frameReader) errorf(kind error, format string, args ...any) error {
	return fmt.Errorf("%s: %w: %s", f.what, kind, fmt.Sprintf(format, args...))
}

// ioErr names a read error: running out of data is truncation.
func (f *frameReader) ioErr(err error, what string) error {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return f.errorf(ErrTruncated, "ends inside %s", what)
	case errors.Is(err, ErrCorrupt), errors.Is(err, ErrTruncated):
		return fmt.Errorf("%s: %w", f.what, err)
	}
	return fmt.Errorf("%s: read %s: %w", f.what, what, err)
}

func (f *frameReader) uvarint(what string) (uint64, error) {
	v, err := binary.ReadUvarint(f)
	if err != nil {
		if strings.Contains(err.Error(), "overflow") {
			return 0, f.errorf(ErrCorrupt, "%s overflows", what)
		}
		return 0, f.ioErr(err, what)
	}
	return v, nil
}

func (f *frameReader) payload(max int, what string) ([]byte, error) {
	n, err := f.uvarint(what)
	if err != nil {
		return nil, err
	}
	if n > uint64(max) {
		return nil, f.errorf(ErrCorrupt, "%s of %d bytes exceeds %d", what, n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, f.ioErr(err, what)
	}
	return b, nil
}

func (f *frameReader) kind(what string) (byte, error) {
	b, err := f.ReadByte()
	if err != nil {
		return 0, f.ioErr(err, what)
	}
	return b, nil
}

// peek returns the next frame's kind without consuming it.
func (f *frameReader) peek(what string) (byte, error) {
	b, err := f.br.Peek(1)
	if err != nil {
		return 0, f.ioErr(err, what)
	}
	return b[0], nil
}

// StreamReader reads a backup stream, or the body of an archive.
type StreamReader struct {
	fr   frameReader
	info Info
	sec  *SectionReader // the section being read
	last byte           // the frame that ended the sections
	err  error
}

// NewStreamReader reads a backup stream's header from r.
func NewStreamReader(r io.Reader) (*StreamReader, error) {
	return newStreamReader(r, streamMagic, "backup stream", nil)
}

func newStreamReader(r io.Reader, magic, what string, h hash.Hash) (*StreamReader, error) {
	s := &StreamReader{fr: frameReader{br: bufio.NewReaderSize(r, 64<<10), h: h, what: what}}
	m := make([]byte, len(magic))
	if _, err := io.ReadFull(&s.fr, m); err != nil {
		return nil, s.fr.ioErr(err, "its header")
	}
	if string(m) != magic {
		return nil, s.fr.errorf(ErrCorrupt, "not a Go-KVDB %s (header %q)", what, m)
	}
	k, err := s.fr.kind("its header")
	if err != nil {
		return nil, err
	}
	if k != frameInfo {
		return nil, s.fr.errorf(ErrCorrupt, "frame %q where the cluster's description belongs", k)
	}
	b, err := s.fr.payload(maxInfo, "the cluster's description")
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &s.info); err != nil {
		return nil, s.fr.errorf(ErrCorrupt, "cluster description: %v", err)
	}
	return s, nil
}

// Info is the cluster's shape when the backup was taken.
func (s *StreamReader) Info() Info { return s.info }

// NextSection returns the next shard's name and a reader of its snapshot.
// The previous section must have been read to its end. After the last
// section it returns io.EOF; a failure the router reported is ErrRemote.
func (s *StreamReader) NextSection() (string, *SectionReader, error) {
	if s.err != nil {
		return "", nil, s.err
	}
	if s.sec != nil && !s.sec.done {
		s.err = errors.New("backup: NextSection before the previous section was read to its end")
		return "", nil, s.err
	}
	k, err := s.fr.peek("a section")
	if err != nil {
		s.err = err
		return "", nil, err
	}
	switch k {
	case frameSection:
		s.fr.ReadByte()
		name, err := s.fr.payload(maxName, "a shard name")
		if err != nil {
			s.err = err
			return "", nil, err
		}
		s.sec = &SectionReader{s: s, name: string(name)}
		return string(name), s.sec, nil
	case frameError:
		s.fr.ReadByte()
		s.err = s.remoteErr()
		return "", nil, s.err
	case frameEnd, frameManifest:
		s.last = k
		s.err = io.EOF
		return "", nil, io.EOF
	}
	s.err = s.fr.errorf(ErrCorrupt, "frame %q where a section belongs", k)
	return "", nil, s.err
}

func (s *StreamReader) remoteErr() error {
	msg, err := s.fr.payload(maxMessage, "an error message")
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: %s", ErrRemote, msg)
}

// End checks that a backup stream ended properly after its last section.
func (s *StreamReader) End() error {
	if s.last != frameEnd {
		if s.err != nil && !errors.Is(s.err, io.EOF) {
			return s.err
		}
		return s.fr.errorf(ErrCorrupt, "no end frame")
	}
	s.fr.ReadByte()
	if _, err := s.fr.br.ReadByte(); err == nil {
		return s.fr.errorf(ErrCorrupt, "data after the end")
	}
	return nil
}

// SectionReader reads the snapshot of one section.
type SectionReader struct {
	s       *StreamReader
	name    string
	left    int // bytes left in the current chunk
	done    bool
	records int64
	err     error
}

// Read reads the section's snapshot bytes; io.EOF after its end frame.
func (d *SectionReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	for d.left == 0 {
		fr := &d.s.fr
		k, err := fr.kind("section " + d.name)
		if err != nil {
			d.err = err
			return 0, err
		}
		switch k {
		case frameData:
			n, err := fr.uvarint("a data chunk")
			if err == nil && (n == 0 || n > maxChunk) {
				err = fr.errorf(ErrCorrupt, "data chunk of %d bytes", n)
			}
			if err != nil {
				d.err = err
				return 0, err
			}
			d.left = int(n)
		case frameSectionEnd:
			n, err := fr.uvarint("a section's record count")
			if err != nil {
				d.err = err
				return 0, err
			}
			d.records, d.done, d.err = int64(n), true, io.EOF
			return 0, io.EOF
		case frameError:
			d.err = d.s.remoteErr()
			d.s.err = d.err
			return 0, d.err
		default:
			d.err = fr.errorf(ErrCorrupt, "frame %q inside section %s", k, d.name)
			return 0, d.err
		}
	}
	if len(p) > d.left {
		p = p[:d.left]
	}
	n, err := d.s.fr.Read(p)
	d.left -= n
	if err != nil && d.left > 0 {
		d.err = d.s.fr.ioErr(err, "section "+d.name)
		return n, d.err
	}
	return n, nil
}

// Records is the record count the section's end frame gives (after EOF).
func (d *SectionReader) Records() int64 { return d.records }
