package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FileName is the bbolt file inside the data directory.
const FileName = "broker.db"

var (
	bucketLog  = []byte("log")
	bucketMeta = []byte("_store")
	keyRev     = []byte("revision")
)

// Bolt is a Store in one bbolt file. Every Commit is one bbolt transaction
// followed by fdatasync, so a returned Commit survives a crash.
type Bolt struct {
	db *bolt.DB
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens (creating if needed) the store in dir. It fails fast when
// another process holds the file.
func OpenBolt(dir string) (*Bolt, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s (is another broker using this data dir?): %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range append(kindBuckets(), bucketLog, bucketMeta) {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Bolt{db: db}, nil
}

func kindBuckets() [][]byte {
	out := make([][]byte, len(Kinds))
	for i, k := range Kinds {
		out[i] = []byte(k)
	}
	return out
}

func revKey(rev int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(rev))
	return b[:]
}

// Load implements Store.
func (s *Bolt) Load(_ context.Context, logLimit int) (*State, error) {
	st := &State{Records: map[string]map[string][]byte{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyRev); len(v) == 8 {
			st.Revision = int64(binary.BigEndian.Uint64(v))
		}
		for _, k := range Kinds {
			m := map[string][]byte{}
			err := tx.Bucket([]byte(k)).ForEach(func(key, v []byte) error {
				m[string(key)] = append([]byte(nil), v...)
				return nil
			})
			if err != nil {
				return err
			}
			st.Records[k] = m
		}
		c := tx.Bucket(bucketLog).Cursor()
		var rev []Change
		for k, v := c.Last(); k != nil && len(rev) < logLimit; k, v = c.Prev() {
			var ch Change
			if err := json.Unmarshal(v, &ch); err != nil {
				return fmt.Errorf("decode log entry %x: %w", k, err)
			}
			rev = append(rev, ch)
		}
		for i := len(rev) - 1; i >= 0; i-- {
			st.Log = append(st.Log, rev[i])
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load store: %w", err)
	}
	return st, nil
}

// Commit implements Store.
func (s *Bolt) Commit(_ context.Context, changes []Change, revision int64, retain int) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		logB := tx.Bucket(bucketLog)
		for _, ch := range changes {
			b := tx.Bucket([]byte(ch.Kind))
			if b == nil {
				return fmt.Errorf("unknown kind %q", ch.Kind)
			}
			if ch.Value == nil {
				if err := b.Delete([]byte(ch.Key)); err != nil {
					return err
				}
			} else if err := b.Put([]byte(ch.Key), ch.Value); err != nil {
				return err
			}
			if ch.Revision > 0 {
				v, err := json.Marshal(ch)
				if err != nil {
					return err
				}
				if err := logB.Put(revKey(ch.Revision), v); err != nil {
					return err
				}
			}
		}
		if err := tx.Bucket(bucketMeta).Put(keyRev, revKey(revision)); err != nil {
			return err
		}
		// Trim the log to the newest retain entries.
		if retain > 0 && revision > int64(retain) {
			limit := revKey(revision - int64(retain) + 1)
			c := logB.Cursor()
			for k, _ := c.First(); k != nil && string(k) < string(limit); k, _ = c.First() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit %d changes: %w", len(changes), err)
	}
	return nil
}

// Close implements Store.
func (s *Bolt) Close() error { return s.db.Close() }
