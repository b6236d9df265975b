package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/fsutil"
	bolt "go.etcd.io/bbolt"
)

// Info describes a store file: what a backup holds.
type Info struct {
	Revision int64
	// Records counts the records of each kind.
	Records map[string]int
	Bytes   int64
}

// WriteSnapshot writes a consistent copy of the whole store (one bbolt
// read transaction, so commits may go on meanwhile) to w.
func (s *Bolt) WriteSnapshot(w io.Writer) (n int64, err error) {
	defer s.recoverDamage(&err)
	err = s.db.View(func(tx *bolt.Tx) error {
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

func (s *Bolt) info() (Info, error) {
	in := Info{Records: map[string]int{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyRev); len(v) == 8 {
			in.Revision = int64(binary.BigEndian.Uint64(v))
		}
		for _, k := range Kinds {
			if b := tx.Bucket([]byte(k)); b != nil {
				in.Records[k] = b.Stats().KeyN
			}
		}
		in.Bytes = tx.Size()
		return nil
	})
	return in, err
}

// VerifyFile opens a store file read-only and checks it as OpenBolt would
// (consistency, schema version), returning what it holds.
func VerifyFile(path string) (Info, error) {
	if _, err := os.Stat(path); err != nil {
		return Info{}, err
	}
	s, err := open(path, true)
	if err != nil {
		return Info{}, err
	}
	defer s.Close()
	return s.info()
}

// BackupFile copies the store of data dir dir to out while no broker
// serves it (it takes the file's shared lock: ErrInUse when a broker
// holds it; back up through the broker's API then). out is written
// atomically and checked afterwards.
func BackupFile(dir, out string) (Info, error) {
	path := filepath.Join(dir, FileName)
	if _, err := os.Stat(path); err != nil {
		return Info{}, fmt.Errorf("store %s: %w", path, err)
	}
	s, err := open(path, true)
	if err != nil {
		return Info{}, err
	}
	defer s.Close()
	if err := WriteFileFrom(out, s.WriteSnapshot); err != nil {
		return Info{}, err
	}
	return VerifyFile(out)
}

// WriteFileFrom writes what write produces to path, atomically and
// durably (fsutil.WriteFileAtomic), mode 0600. The copy is held in memory
// first: a broker store is megabytes, and the project keeps one atomic write.
func WriteFileFrom(path string, write func(io.Writer) (int64, error)) error {
	var buf bytes.Buffer
	if _, err := write(&buf); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return fsutil.WriteFileAtomic(path, buf.Bytes(), 0o600)
}

// Restore replaces the store of data dir dir with the backup file from,
// after checking the backup. It refuses while a broker holds the store.
// The replaced file, damaged or not, is kept beside it as
// broker.db.replaced-<time>; kept is its path ("" when there was none).
func Restore(dir, from string) (in Info, kept string, err error) {
	if _, err := os.Stat(dir); err != nil {
		return Info{}, "", fmt.Errorf("data dir %s: %w (restore into the directory `broker init` made: it holds the CA and certificates)", dir, err)
	}
	in, err = VerifyFile(from)
	if err != nil {
		return Info{}, "", fmt.Errorf("backup %s is not usable: %w", from, err)
	}
	path := filepath.Join(dir, FileName)
	old, err := os.OpenFile(path, os.O_RDWR, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return Info{}, "", fmt.Errorf("store %s: %w", path, err)
	default:
		defer old.Close()
		// bbolt locks with flock: a serving broker holds it.
		if err := syscall.Flock(int(old.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			return Info{}, "", fmt.Errorf("%w: %s is locked by a running broker; stop it, then restore", ErrInUse, path)
		}
		kept = fmt.Sprintf("%s.replaced-%s", path, time.Now().UTC().Format("20060102T150405Z"))
	}
	src, err := os.Open(from)
	if err != nil {
		return Info{}, "", err
	}
	defer src.Close()
	tmp := filepath.Join(dir, ".restore-"+FileName)
	if err := WriteFileFrom(tmp, func(w io.Writer) (int64, error) { return io.Copy(w, src) }); err != nil {
		return Info{}, "", err
	}
	if kept != "" {
		if err := os.Rename(path, kept); err != nil {
			os.Remove(tmp)
			return Info{}, "", fmt.Errorf("keep the old store aside: %w", err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return Info{}, "", fmt.Errorf("put the backup in place: %w", err)
	}
	return in, kept, fsutil.SyncDir(dir)
}
