package storage

import (
	"encoding/binary"
	"fmt"
)

// The wire format between the router and storaged is binary and compact: a
// JSON hop would cost more than the BoltDB read it carries. Both ends live in
// this package, so they cannot drift apart.
//
//	record  = uvarint(len key) key | version (8) | flags (1) | uvarint(len value) value
//	write   = cond (1) | match (8) | record
//	apply request  = write*
//	txn request    = (uvarint(len bucket) bucket | write)*
//	apply response = (outcome (1) | prev version (8) | prev flags (1))*
//	scan response  = more (1) | record*
//	get response   = version (8) | flags (1) | value   (the stored form)

func appendRecord(dst []byte, r *Record) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(r.Key)))
	dst = append(dst, r.Key...)
	dst = binary.BigEndian.AppendUint64(dst, r.Version)
	var flags byte
	if r.Tombstone {
		flags |= flagTombstone
	}
	if r.Truncated {
		flags |= flagTruncated
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(len(r.Value)))
	return append(dst, r.Value...)
}

// wireReader decodes the wire format; the first error sticks.
type wireReader struct {
	b   []byte
	err error
}

func (r *wireReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("truncated or malformed %s: %w", what, ErrInvalid)
	}
}

func (r *wireReader) byte(what string) byte {
	if r.err != nil || len(r.b) < 1 {
		r.fail(what)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *wireReader) uint64(what string) uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.fail(what)
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

// bytes returns a length-prefixed slice, aliasing the input.
func (r *wireReader) bytes(what string, max int) []byte {
	if r.err != nil {
		return nil
	}
	n, k := binary.Uvarint(r.b)
	if k <= 0 || n > uint64(max) || n > uint64(len(r.b)-k) {
		r.fail(what)
		return nil
	}
	v := r.b[k : k+int(n) : k+int(n)]
	r.b = r.b[k+int(n):]
	return v
}

func (r *wireReader) record() Record {
	var rec Record
	rec.Key = r.bytes("record key", MaxKeySize)
	rec.Version = r.uint64("record version")
	flags := r.byte("record flags")
	rec.Tombstone = flags&flagTombstone != 0
	rec.Truncated = flags&flagTruncated != 0
	if v := r.bytes("record value", MaxValueSize); len(v) > 0 {
		rec.Value = v
	}
	return rec
}

func appendWrites(dst []byte, writes []Write) []byte {
	for i := range writes {
		w := &writes[i]
		dst = append(dst, byte(w.Cond))
		dst = binary.BigEndian.AppendUint64(dst, w.Match)
		dst = appendRecord(dst, &w.Record)
	}
	return dst
}

func parseWrites(b []byte) ([]Write, error) {
	r := wireReader{b: b}
	var writes []Write
	for len(r.b) > 0 && r.err == nil {
		if len(writes) == MaxBatch {
			return nil, fmt.Errorf("more than %d writes: %w", MaxBatch, ErrInvalid)
		}
		var w Write
		w.Cond = Cond(r.byte("write condition"))
		w.Match = r.uint64("write match")
		w.Record = r.record()
		writes = append(writes, w)
	}
	return writes, r.err
}

func appendTxn(dst []byte, writes []TxnWrite) []byte {
	for i := range writes {
		dst = binary.AppendUvarint(dst, uint64(len(writes[i].Bucket)))
		dst = append(dst, writes[i].Bucket...)
		dst = appendWrites(dst, []Write{writes[i].Write})
	}
	return dst
}

func parseTxn(b []byte) ([]TxnWrite, error) {
	r := wireReader{b: b}
	var writes []TxnWrite
	for len(r.b) > 0 && r.err == nil {
		if len(writes) == MaxBatch {
			return nil, fmt.Errorf("more than %d writes: %w", MaxBatch, ErrInvalid)
		}
		var w TxnWrite
		w.Bucket = string(r.bytes("write bucket", 32))
		w.Cond = Cond(r.byte("write condition"))
		w.Match = r.uint64("write match")
		w.Record = r.record()
		writes = append(writes, w)
	}
	return writes, r.err
}

func appendResults(dst []byte, results []Result) []byte {
	for _, res := range results {
		dst = append(dst, byte(res.Outcome))
		dst = binary.BigEndian.AppendUint64(dst, res.PrevVersion)
		var flags byte
		if res.PrevTombstone {
			flags |= flagTombstone
		}
		dst = append(dst, flags)
	}
	return dst
}

func parseResults(b []byte, n int) ([]Result, error) {
	r := wireReader{b: b}
	results := make([]Result, n)
	for i := range results {
		results[i].Outcome = Outcome(r.byte("result outcome"))
		results[i].PrevVersion = r.uint64("result version")
		results[i].PrevTombstone = r.byte("result flags")&flagTombstone != 0
	}
	if r.err == nil && len(r.b) != 0 {
		return nil, fmt.Errorf("%d results expected, more received: %w", n, ErrInvalid)
	}
	return results, r.err
}

func appendScanPage(dst []byte, p *ScanPage) []byte {
	var more byte
	if p.More {
		more = 1
	}
	dst = append(dst, more)
	for i := range p.Records {
		dst = appendRecord(dst, &p.Records[i])
	}
	return dst
}

func parseScanPage(b []byte) (ScanPage, error) {
	r := wireReader{b: b}
	var p ScanPage
	p.More = r.byte("scan header") == 1
	for len(r.b) > 0 && r.err == nil {
		p.Records = append(p.Records, r.record())
	}
	return p, r.err
}

func appendKeys(dst []byte, keys [][]byte) []byte {
	for _, k := range keys {
		dst = binary.AppendUvarint(dst, uint64(len(k)))
		dst = append(dst, k...)
	}
	return dst
}

func parseKeys(b []byte) ([][]byte, error) {
	r := wireReader{b: b}
	var keys [][]byte
	for len(r.b) > 0 && r.err == nil {
		if len(keys) == MaxBatch {
			return nil, fmt.Errorf("more than %d keys: %w", MaxBatch, ErrInvalid)
		}
		keys = append(keys, r.bytes("key", MaxKeySize))
	}
	return keys, r.err
}
