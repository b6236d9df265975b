package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt's on-disk meta page (its own layout, native little-endian): a
// 16-byte page header, then magic, version, page size, flags, the root
// bucket (16 bytes), the freelist page, the high-water page id, the
// transaction id and an FNV-64a checksum of the fields before it.
const (
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	metaOff         = 16
	metaChecksumOff = metaOff + 56
	noFreelist      = ^uint64(0)
)

type boltMeta struct {
	pageSize       uint32
	freelist, pgid uint64
	txid           uint64
	valid          bool
}

func readMeta(b []byte) boltMeta {
	le := binary.LittleEndian
	m := boltMeta{
		pageSize: le.Uint32(b[metaOff+8:]),
		freelist: le.Uint64(b[metaOff+32:]),
		pgid:     le.Uint64(b[metaOff+40:]),
		txid:     le.Uint64(b[metaOff+48:]),
	}
	h := fnv.New64a()
	h.Write(b[metaOff:metaChecksumOff])
	m.valid = le.Uint32(b[metaOff:]) == boltMagic && le.Uint32(b[metaOff+4:]) == boltVersion &&
		le.Uint64(b[metaChecksumOff:]) == h.Sum64()
	return m
}

// precheck refuses an empty file (the one place that check lives) and
// looks at the meta pages before bbolt maps the file: bbolt reads a
// truncated file's pages past its end through mmap, which kills the
// process with SIGBUS, something no recover can catch. A nil error means
// the file is at least as long as its newest valid meta page says; files
// with no valid meta page are left to bbolt, which refuses them.
func precheck(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() == 0 {
		return errors.New("the file is empty (0 bytes)")
	}
	buf := make([]byte, metaChecksumOff+8)
	var best boltMeta
	for i := 0; i < 2; i++ {
		off := int64(0)
		if i == 1 {
			if best.pageSize == 0 {
				// The first page does not tell the page size; try the usual one.
				off = int64(os.Getpagesize())
			} else {
				off = int64(best.pageSize)
			}
		}
		if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
			continue
		}
		m := readMeta(buf)
		if i == 0 {
			best.pageSize = m.pageSize
		}
		if m.valid && (!best.valid || m.txid > best.txid) {
			best = m
		}
	}
	if !best.valid {
		return nil
	}
	need := int64(best.pgid) * int64(best.pageSize)
	if best.pageSize == 0 || need/int64(best.pageSize) != int64(best.pgid) {
		return fmt.Errorf("its metadata is not consistent (page size %d, %d pages)", best.pageSize, best.pgid)
	}
	if st.Size() < need {
		return fmt.Errorf("the file is %d bytes, shorter than the %d bytes its metadata describes (truncated)", st.Size(), need)
	}
	if best.freelist != noFreelist && best.freelist >= best.pgid {
		return fmt.Errorf("its freelist page %d lies past its last page %d", best.freelist, best.pgid)
	}
	return nil
}
