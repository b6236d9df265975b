package store

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// filledStore makes a store with enough records to span many pages.
func filledStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	for rev := int64(1); rev <= 200; rev++ {
		v := []byte(fmt.Sprintf(`{"n":%d,"pad":"%s"}`, rev, strings.Repeat("x", 500)))
		if _, err := s.Commit(context.Background(), 0, []Change{{Revision: rev, Kind: KindExport, Key: fmt.Sprintf("e%03d", rev), Value: v}}, rev, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOpenRefusesDamage(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
		want   []string
	}{
		{name: "truncated", damage: func(t *testing.T, path string) {
			st, _ := os.Stat(path)
			if err := os.Truncate(path, st.Size()/2); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"is damaged", "broker restore"}},
		{name: "truncated to its meta pages", damage: func(t *testing.T, path string) {
			// Pages past the end would be read through mmap: SIGBUS, not a panic.
			if err := os.Truncate(path, 8192); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"is damaged", "shorter than", "broker restore"}},
		{name: "pages overwritten", damage: func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			junk := make([]byte, 4096)
			for _, page := range []int64{2, 3, 5, 8, 13} {
				_, _ = rand.Read(junk)
				if _, err := f.WriteAt(junk, page*4096); err != nil {
					t.Fatal(err)
				}
			}
		}, want: []string{"is damaged", "broker restore"}},
		{name: "meta pages overwritten", damage: func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(make([]byte, 8192), 0); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"is damaged", "broker restore"}},
		{name: "empty", damage: func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"empty", "broker restore"}},
		{name: "unknown schema version", damage: func(t *testing.T, path string) {
			setSchema(t, path, "99")
		}, want: []string{`schema version "99"`, "another tunnelmesh version"}},
		{name: "no schema marker", damage: func(t *testing.T, path string) {
			setSchema(t, path, "")
		}, want: []string{"no schema version marker"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filledStore(t)
			path := filepath.Join(dir, FileName)
			tc.damage(t, path)
			before, _ := os.ReadFile(path)
			s, err := OpenBolt(dir)
			if err == nil {
				s.Close()
				t.Fatal("a damaged store opened")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "another broker") {
				t.Errorf("error %q blames another broker for damage", err)
			}
			// Nothing was written over the evidence.
			if after, _ := os.ReadFile(path); string(after) != string(before) {
				t.Errorf("opening changed the damaged file (%d -> %d bytes)", len(before), len(after))
			}
		})
	}
}

func setSchema(t *testing.T, path, v string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		if v == "" {
			return tx.Bucket(bucketMeta).Delete(keySchema)
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(v))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A data dir without its store never silently becomes a fresh, empty store.
func TestOpenNeverCreates(t *testing.T) {
	dir := t.TempDir()
	_, err := OpenBolt(dir)
	if !errors.Is(err, ErrNoStore) || !strings.Contains(err.Error(), "broker restore") {
		t.Fatalf("missing store: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenBolt created a store file: %v", err)
	}
	if _, err := OpenBolt(filepath.Join(dir, "nope")); err == nil || !strings.Contains(err.Error(), "broker init") {
		t.Fatalf("missing data dir: %v", err)
	}
}

// Only the lock case speaks of another broker.
func TestOpenLocked(t *testing.T) {
	dir := filledStore(t)
	s, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = OpenBolt(dir)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "another broker") {
		t.Fatalf("second open: %v", err)
	}
}
