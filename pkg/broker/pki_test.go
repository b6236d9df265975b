package broker_test

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
)

func TestInitCertificatesAndIdempotency(t *testing.T) {
	dir := t.TempDir()
	admin, err := broker.Init(broker.InitOptions{DataDir: dir, SANs: []string{"broker.example", "192.0.2.5"}})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, broker.FileCACert))
	srvPEM, _ := os.ReadFile(filepath.Join(dir, broker.FileServerCert))
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA not PEM")
	}
	blk, _ := pem.Decode(srvPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"localhost", "127.0.0.1", "broker.example", "192.0.2.5"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("server certificate not valid for %s: %v", host, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.example"}); err == nil {
		t.Error("server certificate valid for a name it was not given")
	}
	for name, mode := range map[string]os.FileMode{broker.FileAdminToken: 0o600, broker.FileCAKey: 0o600, broker.FileServerKey: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v err %v, want %v", name, fi.Mode().Perm(), err, mode)
		}
	}
	if _, err := broker.Init(broker.InitOptions{DataDir: dir}); err == nil {
		t.Fatal("second init without Force succeeded")
	}
	after, _ := os.ReadFile(filepath.Join(dir, broker.FileCACert))
	if string(after) != string(caPEM) {
		t.Fatal("refused init changed the CA")
	}
	admin2, err := broker.Init(broker.InitOptions{DataDir: dir, Force: true})
	if err != nil || admin2 == admin {
		t.Fatalf("forced init: %v (new admin differs: %v)", err, admin2 != admin)
	}
	// Only the new admin credential works.
	tb := startBroker(t, dir, "127.0.0.1:0", nil)
	if _, err := tb.client(admin).ListTokens(ctxT(t)); apiCode(err) != "Unauthorized" {
		t.Fatalf("old admin credential: %v", err)
	}
	if _, err := tb.client(admin2).ListTokens(ctxT(t)); err != nil {
		t.Fatalf("new admin credential: %v", err)
	}
}
