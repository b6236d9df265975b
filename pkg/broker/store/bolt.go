package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the bbolt file inside the data directory.
const FileName = "broker.db"

var (
	bucketLog  = []byte("log")
	bucketMeta = []byte("_store")
	keyRev     = []byte("revision")
	keySchema  = []byte("schema")
)

// SchemaVersion is the layout of the records this code writes; Create
// stamps it and OpenBolt refuses any other.
const SchemaVersion = "1"

// Bolt is a Store in one bbolt file. Every Commit is one bbolt transaction
// followed by fdatasync, so a returned Commit survives a crash.
type Bolt struct {
	db   *bolt.DB
	path string
}

var _ Store = (*Bolt)(nil)

// ErrInUse means another process holds the store's file lock.
var ErrInUse = errors.New("store in use")

// ErrNoStore means the data directory holds no store file.
var ErrNoStore = errors.New("no store")

// OpenBolt opens the store that `broker init` created in dir. It never
// creates one: a missing, empty or damaged file, a file of an unknown
// schema version, or one another process holds is an error saying what to
// do. The whole file is checked (bbolt's consistency check) before use.
func OpenBolt(dir string) (*Bolt, error) {
	path := filepath.Join(dir, FileName)
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("data dir %s: %w; create it with `broker init --data-dir %s`", dir, err, dir)
	}
	_, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist, though data dir %s does; "+
			"restore the store from a backup (`broker restore --data-dir %s --from FILE`), "+
			"or make a new, empty clusterset with `broker init --data-dir DIR` in a new directory", ErrNoStore, path, dir, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	return open(path, false)
}

// Create makes a new store in dir for `broker init`, stamped with
// SchemaVersion; a store already there is opened (and checked) instead.
func Create(dir string) (*Bolt, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	if _, err := os.Stat(path); err == nil {
		return open(path, false)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("create store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range append(kindBuckets(), bucketLog, bucketMeta) {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(SchemaVersion))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("create store %s: %w", path, err)
	}
	return &Bolt{db: db, path: path}, nil
}

func damaged(path string, err error) error {
	return fmt.Errorf("store %s is damaged: %v; stop the broker and restore the store from a backup "+
		"(`broker restore --data-dir %s --from FILE`); the damaged file is kept aside by restore for inspection",
		path, err, filepath.Dir(path))
}

// open opens and checks path (an empty file is refused by precheck, for
// every caller). bbolt panics on some damaged files (a
// truncated file: "invalid freelist page"; overwritten pages: "assertion
// failed: Page expected to be ..."); those become errors here.
func open(path string, readOnly bool) (b *Bolt, err error) {
	var db *bolt.DB
	defer func() {
		if r := recover(); r != nil {
			// The handle may be half open; a damaged store is not used again
			// by this process, so it is left for the process exit to close.
			b, err = nil, damaged(path, fmt.Errorf("%v", r))
		}
	}()
	if err := precheck(path); err != nil {
		return nil, damaged(path, err)
	}
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, ReadOnly: readOnly})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s is locked by another process (is another broker using this data dir, or is it serving? stop it first)", ErrInUse, path)
	}
	if err != nil {
		return nil, damaged(path, err)
	}
	if err := check(db); err != nil {
		db.Close()
		return nil, damaged(path, err)
	}
	if err := schema(db, path); err != nil {
		db.Close()
		return nil, err
	}
	if !readOnly {
		err := db.Update(func(tx *bolt.Tx) error {
			for _, k := range laterKinds {
				if _, err := tx.CreateBucketIfNotExists([]byte(k)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("store %s: add buckets: %w", path, err)
		}
	}
	return &Bolt{db: db, path: path}, nil
}

// check runs bbolt's consistency check over every page and our buckets.
func check(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		for _, b := range append(kindBuckets(), bucketLog, bucketMeta) {
			if tx.Bucket(b) == nil && !slices.Contains(laterKinds, string(b)) {
				return fmt.Errorf("bucket %q missing", b)
			}
		}
		return nil
	})
}

func schema(db *bolt.DB, path string) error {
	var v string
	_ = db.View(func(tx *bolt.Tx) error {
		v = string(tx.Bucket(bucketMeta).Get(keySchema))
		return nil
	})
	switch v {
	case SchemaVersion:
		return nil
	case "":
		return fmt.Errorf("store %s has no schema version marker: it was not made by `broker init` of this version "+
			"(schema %s); restore a backup made by this version, or re-create the clusterset with `broker init` in a new data dir", path, SchemaVersion)
	}
	return fmt.Errorf("store %s has schema version %q, which this broker does not know (it knows %s): it was written by "+
		"another tunnelmesh version; run that version, or restore a backup made by this one", path, v, SchemaVersion)
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
func (s *Bolt) Load(_ context.Context, logLimit int) (st *State, err error) {
	defer s.recoverDamage(&err)
	st = &State{Records: map[string]map[string][]byte{}}
	err = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyRev); len(v) == 8 {
			st.Revision = int64(binary.BigEndian.Uint64(v))
		}
		for _, k := range Kinds {
			m := map[string][]byte{}
			st.Records[k] = m
			b := tx.Bucket([]byte(k))
			if b == nil { // a later kind in a file opened read-only
				continue
			}
			err := b.ForEach(func(key, v []byte) error {
				m[string(key)] = append([]byte(nil), v...)
				return nil
			})
			if err != nil {
				return err
			}
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
// base is ignored: one process holds the file, so nothing else commits.
func (s *Bolt) Commit(_ context.Context, _ int64, changes []Change, revision int64, retain int) (_ int64, err error) {
	defer s.recoverDamage(&err)
	err = s.db.Update(func(tx *bolt.Tx) error {
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
		return 0, fmt.Errorf("commit %d changes: %w", len(changes), err)
	}
	return 0, nil
}

// Follow implements Store: nobody else writes a bbolt file.
func (s *Bolt) Follow(context.Context, int64) <-chan Batch { return nil }

// recoverDamage turns a bbolt panic (a page damaged after the open-time
// check) into an error, so the broker answers 500 and logs it instead of
// dying with a stack trace.
func (s *Bolt) recoverDamage(err *error) {
	if r := recover(); r != nil {
		*err = damaged(s.path, fmt.Errorf("%v", r))
	}
}

// Close implements Store.
func (s *Bolt) Close() error { return s.db.Close() }
