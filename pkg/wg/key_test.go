package wg

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "private.key")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, err %v", st.Mode(), err)
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil || k1 != k2 {
		t.Fatalf("second load gave another key (%v)", err)
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "no valid WireGuard key") {
		t.Fatalf("want a clear error for a corrupt key file, got %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "garbage" {
		t.Fatal("corrupt key file was overwritten")
	}
}
