package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInitRefusesBadSAN(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	_, err := run(t, "init", "--data-dir", dir, "--san", "broker.example,https://broker.example:8443")
	if err == nil || !strings.HasPrefix(err.Error(), "--san: ") || !strings.Contains(err.Error(), "give only its host, broker.example") {
		t.Fatalf("got %v", err)
	}
	if _, serr := os.Stat(dir); serr == nil {
		t.Fatal("refused init created the data dir")
	}
}

// TestServeRefusesWithoutMatchingCA: serve stops at once, naming the file,
// when the CA is missing or did not sign the server certificate.
func TestServeRefusesWithoutMatchingCA(t *testing.T) {
	initDir := func() string {
		dir := t.TempDir()
		if _, err := run(t, "init", "--data-dir", dir); err != nil {
			t.Fatalf("init: %v", err)
		}
		return dir
	}
	noCA := initDir()
	if err := os.Remove(filepath.Join(noCA, "ca.crt")); err != nil {
		t.Fatal(err)
	}
	foreign := initDir()
	other, _ := os.ReadFile(filepath.Join(initDir(), "ca.crt"))
	if err := os.WriteFile(filepath.Join(foreign, "ca.crt"), other, 0o644); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]string{
		noCA:    "no CA certificate " + filepath.Join(noCA, "ca.crt"),
		foreign: "server certificate " + filepath.Join(foreign, "server.crt") + " is not signed by the CA " + filepath.Join(foreign, "ca.crt"),
	} {
		done := make(chan error, 1)
		go func() {
			_, err := run(t, "serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--log-level", "error")
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("serve %s: got %v, want %q", dir, err, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("serve %s did not refuse to start", dir)
		}
	}
}

// TestOpenStoreWithPKIElsewhere: with the PKI in its own directory (a
// mounted Secret) an empty data dir gets a new store on first start; a data
// dir holding anything else is refused, never initialised over.
func TestOpenStoreWithPKIElsewhere(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sf := &storeFlags{kind: storeBolt}
	openStore := func(dir string, pkiElsewhere bool, log *slog.Logger) (interface{ Close() error }, error) {
		return sf.open(context.Background(), dir, pkiElsewhere, log)
	}
	empty := filepath.Join(t.TempDir(), "fresh")
	st, err := openStore(empty, true, log)
	if err != nil {
		t.Fatalf("empty data dir: %v", err)
	}
	st.Close()
	if st, err = openStore(empty, true, log); err != nil { // the store made above opens again
		t.Fatalf("reopen: %v", err)
	}
	st.Close()

	stray := t.TempDir()
	if err := os.WriteFile(filepath.Join(stray, "notes.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openStore(stray, true, log); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("data dir with a stray file: got %v, want a refusal", err)
	}
	if _, err := openStore(t.TempDir(), false, log); err == nil {
		t.Fatal("without --pki-dir an empty data dir must be refused (broker init makes the store)")
	}
}

// TestServeRefusesTooShortStaleAfter: a TTL shorter than the replicas'
// exchange of heartbeats can keep up with is refused before anything starts.
func TestServeRefusesTooShortStaleAfter(t *testing.T) {
	dir := t.TempDir()
	if _, err := run(t, "init", "--data-dir", dir); err != nil {
		t.Fatalf("init: %v", err)
	}
	for _, v := range []string{"0s", "-5s", "2s", "2.999s"} {
		done := make(chan error, 1)
		go func() {
			_, err := run(t, "serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--log-level", "error", "--stale-after", v)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.HasPrefix(err.Error(), "--stale-after "+v+": ") || !strings.Contains(err.Error(), "at least 3s") {
				t.Errorf("--stale-after %s: got %v, want a clear refusal", v, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("serve --stale-after %s did not refuse to start", v)
		}
	}
}
