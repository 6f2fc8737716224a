package backup

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Sentinel errors, wrapped with what was being read.
var (
	// ErrTruncated is returned when the data ends before its end marker.
	ErrTruncated = errors.New("truncated")
	// ErrCorrupt is returned when the data is malformed, its counts or
	// checksums disagree, or it is not of this format at all.
	ErrCorrupt = errors.New("corrupt")
	// ErrRemote is returned by StreamReader when the router reported a
	// failure in the stream (a shard that broke off mid-snapshot).
	ErrRemote = errors.New("backup failed on the server")
)

// Limits a reader enforces, the same as a shard's.
const (
	MaxKeySize    = 4096
	MaxValueSize  = 64 << 20
	maxBucketName = 32
)

const snapshotMagic = "KVDBSNP1"

const flagTombstone = 1 << 0

// validBucket is the storage's rule for bucket names.
var validBucket = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// Record is one versioned record of a bucket. A tombstone has no value.
type Record struct {
	Key       []byte
	Version   uint64
	Tombstone bool
	Value     []byte
}

// Stats counts a snapshot's records.
type Stats struct {
	Records    int64            `json:"records"`
	Tombstones int64            `json:"tombstones"`
	Buckets    map[string]int64 `json:"buckets"` // records per bucket
}

func (s *Stats) add(bucket string, tomb bool) {
	if s.Buckets == nil {
		s.Buckets = map[string]int64{}
	}
	s.Records++
	s.Buckets[bucket]++
	if tomb {
		s.Tombstones++
	}
}

// SnapshotWriter writes a snapshot stream: Bucket, then its Records, for
// each bucket; then Close. The first error sticks.
type SnapshotWriter struct {
	w        *bufio.Writer
	inBucket bool
	names    map[string]bool
	n, total int64
	buf      []byte
	err      error
}

// NewSnapshotWriter starts a snapshot on w.
func NewSnapshotWriter(w io.Writer) *SnapshotWriter {
	s := &SnapshotWriter{w: bufio.NewWriterSize(w, 64<<10), names: map[string]bool{}}
	_, s.err = s.w.WriteString(snapshotMagic)
	return s
}

func (s *SnapshotWriter) write(b []byte) {
	if s.err == nil {
		_, s.err = s.w.Write(b)
	}
}

func (s *SnapshotWriter) endBucket() {
	if s.inBucket {
		s.buf = binary.AppendUvarint(binary.AppendUvarint(s.buf[:0], 0), uint64(s.n))
		s.write(s.buf)
		s.inBucket, s.n = false, 0
	}
}

// Bucket ends the current bucket and starts the one called name. A name
// may appear once.
func (s *SnapshotWriter) Bucket(name string) error {
	if s.err == nil && (!validBucket.MatchString(name) || s.names[name]) {
		s.err = fmt.Errorf("snapshot bucket %q: invalid or repeated name", name)
	}
	s.endBucket()
	s.names[name] = true
	s.buf = binary.AppendUvarint(s.buf[:0], uint64(len(name)))
	s.buf = append(s.buf, name...)
	s.write(s.buf)
	s.inBucket = true
	return s.err
}

// Record adds a record to the current bucket.
func (s *SnapshotWriter) Record(r *Record) error {
	if s.err == nil && !s.inBucket {
		s.err = errors.New("snapshot record outside a bucket")
	}
	if s.err == nil && (len(r.Key) == 0 || len(r.Key) > MaxKeySize || len(r.Value) > MaxValueSize) {
		s.err = fmt.Errorf("snapshot record of %d key bytes, %d value bytes: out of bounds", len(r.Key), len(r.Value))
	}
	s.buf = AppendRecord(s.buf[:0], r)
	s.write(s.buf)
	s.n++
	s.total++
	return s.err
}

// Close ends the snapshot (not the underlying writer) and flushes it.
func (s *SnapshotWriter) Close() error {
	s.endBucket()
	s.buf = binary.AppendUvarint(binary.AppendUvarint(s.buf[:0], 0), uint64(s.total))
	s.write(s.buf)
	if s.err == nil {
		s.err = s.w.Flush()
	}
	return s.err
}

// Records is how many records were written.
func (s *SnapshotWriter) Records() int64 { return s.total }

// AppendRecord appends r in the storage wire format.
func AppendRecord(dst []byte, r *Record) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(r.Key)))
	dst = append(dst, r.Key...)
	dst = binary.BigEndian.AppendUint64(dst, r.Version)
	var flags byte
	if r.Tombstone {
		flags |= flagTombstone
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(len(r.Value)))
	return append(dst, r.Value...)
}

// SnapshotReader reads a snapshot stream, checking its structure and its
// counts as it goes: Next returns io.EOF only after a complete snapshot
// followed by nothing else.
type SnapshotReader struct {
	r      *bufio.Reader
	what   string // names the data in errors
	state  int
	bucket string
	n      int64 // records of the current bucket
	stats  Stats
	err    error
}

const (
	stMagic = iota
	stBucket
	stRecord
	stDone
)

// NewSnapshotReader reads a snapshot from r; what names it in errors
// ("snapshot of shard sh-1").
func NewSnapshotReader(r io.Reader, what string) *SnapshotReader {
	return &SnapshotReader{r: bufio.NewReaderSize(r, 64<<10), what: what}
}

func (s *SnapshotReader) fail(kind error, format string, args ...any) error {
	if s.err == nil {
		s.err = fmt.Errorf("%s: %w: %s", s.what, kind, fmt.Sprintf(format, args...))
	}
	return s.err
}

// readErr turns an I/O error into a sentinel one: running out of data is
// truncation.
func (s *SnapshotReader) readErr(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return s.fail(ErrTruncated, "ends inside %s", what)
	}
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrRemote) {
		if s.err == nil {
			s.err = fmt.Errorf("%s: %w", s.what, err)
		}
		return s.err
	}
	if s.err == nil {
		s.err = fmt.Errorf("%s: read %s: %w", s.what, what, err)
	}
	return s.err
}

func (s *SnapshotReader) uvarint(what string) (uint64, error) {
	v, err := binary.ReadUvarint(s.r)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, s.readErr(io.ErrUnexpectedEOF, what)
		}
		if strings.Contains(err.Error(), "overflow") { // encoding/binary's unexported errOverflow
			return 0, s.fail(ErrCorrupt, "%s overflows", what)
		}
		return 0, s.readErr(err, what)
	}
	return v, nil
}

func (s *SnapshotReader) bytes(n uint64, max int, what string) ([]byte, error) {
	if n > uint64(max) {
		return nil, s.fail(ErrCorrupt, "%s of %d bytes exceeds %d", what, n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(s.r, b); err != nil {
		return nil, s.readErr(err, what)
	}
	return b, nil
}

// Next returns the next record and its bucket, or io.EOF after the end.
func (s *SnapshotReader) Next() (bucket string, rec Record, err error) {
	if s.err != nil {
		return "", Record{}, s.err
	}
	for {
		switch s.state {
		case stMagic:
			var m [len(snapshotMagic)]byte
			if _, err := io.ReadFull(s.r, m[:]); err != nil {
				return "", Record{}, s.readErr(err, "its header")
			}
			if string(m[:]) != snapshotMagic {
				return "", Record{}, s.fail(ErrCorrupt, "not a snapshot (header %q)", m[:])
			}
			s.state = stBucket
		case stBucket:
			n, err := s.uvarint("a bucket name")
			if err != nil {
				return "", Record{}, err
			}
			if n == 0 { // the end: the total must match
				total, err := s.uvarint("the snapshot's record count")
				if err != nil {
					return "", Record{}, err
				}
				if int64(total) != s.stats.Records {
					return "", Record{}, s.fail(ErrCorrupt, "%d records read, the snapshot says %d", s.stats.Records, total)
				}
				if _, err := s.r.ReadByte(); err == nil {
					return "", Record{}, s.fail(ErrCorrupt, "data after the end of the snapshot")
				} else if !errors.Is(err, io.EOF) {
					return "", Record{}, s.readErr(err, "the end")
				}
				s.state = stDone
				continue
			}
			name, err := s.bytes(n, maxBucketName, "a bucket name")
			if err != nil {
				return "", Record{}, err
			}
			if !validBucket.Match(name) {
				return "", Record{}, s.fail(ErrCorrupt, "bucket name %q", name)
			}
			if _, seen := s.stats.Buckets[string(name)]; seen {
				return "", Record{}, s.fail(ErrCorrupt, "bucket %q appears twice", name)
			}
			if s.stats.Buckets == nil {
				s.stats.Buckets = map[string]int64{}
			}
			s.stats.Buckets[string(name)] = 0
			s.bucket, s.n, s.state = string(name), 0, stRecord
		case stRecord:
			n, err := s.uvarint("a record key")
			if err != nil {
				return "", Record{}, err
			}
			if n == 0 { // the bucket's end
				count, err := s.uvarint("a bucket's record count")
				if err != nil {
					return "", Record{}, err
				}
				if int64(count) != s.n {
					return "", Record{}, s.fail(ErrCorrupt, "bucket %s: %d records read, the snapshot says %d", s.bucket, s.n, count)
				}
				s.state = stBucket
				continue
			}
			var rec Record
			if rec.Key, err = s.bytes(n, MaxKeySize, "a record key"); err != nil {
				return "", Record{}, err
			}
			var hdr [9]byte
			if _, err := io.ReadFull(s.r, hdr[:]); err != nil {
				return "", Record{}, s.readErr(err, "a record")
			}
			rec.Version = binary.BigEndian.Uint64(hdr[:8])
			rec.Tombstone = hdr[8]&flagTombstone != 0
			if hdr[8]&^flagTombstone != 0 || rec.Version == 0 {
				return "", Record{}, s.fail(ErrCorrupt, "record %q: bad version or flags", rec.Key)
			}
			vn, err := s.uvarint("a record value")
			if err != nil {
				return "", Record{}, err
			}
			if rec.Value, err = s.bytes(vn, MaxValueSize, "a record value"); err != nil {
				return "", Record{}, err
			}
			if rec.Tombstone && len(rec.Value) > 0 {
				return "", Record{}, s.fail(ErrCorrupt, "tombstone %q with a value", rec.Key)
			}
			if len(rec.Value) == 0 && !rec.Tombstone {
				rec.Value = []byte{}
			}
			s.n++
			s.stats.add(s.bucket, rec.Tombstone)
			return s.bucket, rec, nil
		case stDone:
			return "", Record{}, io.EOF
		}
	}
}

// Stats counts what has been read so far.
func (s *SnapshotReader) Stats() Stats { return s.stats }

// ReadSnapshot reads a whole snapshot, calling fn (when not nil) for each
// record, and returns its counts.
func ReadSnapshot(r io.Reader, what string, fn func(bucket string, rec Record) error) (Stats, error) {
	sr := NewSnapshotReader(r, what)
	for {
		bucket, rec, err := sr.Next()
		if errors.Is(err, io.EOF) {
			return sr.Stats(), nil
		}
		if err != nil {
			return sr.Stats(), err
		}
		if fn != nil {
			if err := fn(bucket, rec); err != nil {
				return sr.Stats(), err
			}
		}
	}
}
