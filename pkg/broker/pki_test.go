package broker_test

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerpki"
)

func TestInitCertificatesAndIdempotency(t *testing.T) {
	dir := t.TempDir()
	admin, err := broker.Init(broker.InitOptions{DataDir: dir, SANs: []string{"broker.example", "192.0.2.5"}})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, brokerpki.FileCACert))
	srvPEM, _ := os.ReadFile(filepath.Join(dir, brokerpki.FileServerCert))
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
	for name, mode := range map[string]os.FileMode{brokerpki.FileAdminToken: 0o600, brokerpki.FileCAKey: 0o600, brokerpki.FileServerKey: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v err %v, want %v", name, fi.Mode().Perm(), err, mode)
		}
	}
	if _, err := broker.Init(broker.InitOptions{DataDir: dir}); err == nil {
		t.Fatal("second init without Force succeeded")
	}
	after, _ := os.ReadFile(filepath.Join(dir, brokerpki.FileCACert))
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

func TestInitRefusesBadSANs(t *testing.T) {
	for san, want := range map[string]string{
		"https://broker.example:8443/x":      "give only its host, broker.example",
		"[::1]":                              "without brackets (or port): ::1",
		"[fd00::1]:8443":                     "without brackets",
		"broker.example:8443":                "has a port; give the host only, broker.example",
		"fe80::1%eth0":                       "zones",
		"0.0.0.0":                            "unspecified",
		"bro ker.example":                    "not allowed in a DNS name",
		"under_score.example":                "not allowed in a DNS name",
		"-lead.example":                      "must be 1-63",
		"a..b":                               "must be 1-63",
		"broker.example.":                    "without the trailing dot",
		"10.0.0":                             "not a valid IP address",
		"1.2.3.999":                          "not a valid IP address",
		"*.com":                              "wildcard",
		"a.*.example":                        "wildcard",
		"":                                   "empty",
		strings.Repeat("a", 64) + ".example": "must be 1-63",
	} {
		dir := filepath.Join(t.TempDir(), "data")
		_, err := broker.Init(broker.InitOptions{DataDir: dir, SANs: []string{"ok.example", san}})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "SAN") {
			t.Errorf("SAN %q: got %v, want an error mentioning %q", san, err, want)
		}
		if _, serr := os.Stat(dir); serr == nil {
			t.Errorf("SAN %q: refused init created %s", san, dir)
		}
	}
}

func TestInitSANsDeduplicated(t *testing.T) {
	dir := t.TempDir()
	_, err := broker.Init(broker.InitOptions{DataDir: dir, SANs: []string{
		"192.0.2.5", "192.0.2.5", "::ffff:192.0.2.5", "127.0.0.1", "::1", "0:0:0:0:0:0:0:1",
		"Broker.Example", "broker.example", "LOCALHOST", "*.mesh.example", "fd00::5"}})
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, _ := os.ReadFile(filepath.Join(dir, brokerpki.FileServerCert))
	blk, _ := pem.Decode(pemBytes)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"127.0.0.1", "::1", "192.0.2.5", "fd00::5"}; !slices.Equal(ips, want) {
		t.Errorf("IP SANs %v, want %v", ips, want)
	}
	if want := []string{"localhost", "broker.example", "*.mesh.example"}; !slices.Equal(cert.DNSNames, want) {
		t.Errorf("DNS SANs %v, want %v", cert.DNSNames, want)
	}
	if len(cert.IPAddresses[2]) != net.IPv4len {
		t.Errorf("IPv4 SAN stored in %d bytes", len(cert.IPAddresses[2]))
	}
}

func TestServerTLSChecksTheCA(t *testing.T) {
	good := initDir(t)
	if _, err := brokerpki.ServerTLS(good); err != nil {
		t.Fatalf("freshly initialised dir refused: %v", err)
	}

	noCA := initDir(t)
	if err := os.Remove(filepath.Join(noCA, brokerpki.FileCACert)); err != nil {
		t.Fatal(err)
	}
	_, err := brokerpki.ServerTLS(noCA)
	for _, want := range []string{filepath.Join(noCA, brokerpki.FileCACert), "broker init --data-dir " + noCA, "backup"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("without a CA: got %v, want it to mention %q", err, want)
		}
	}

	// The CA of another broker: the server certificate does not chain to it.
	otherCA := initDir(t)
	ca, _ := os.ReadFile(filepath.Join(initDir(t), brokerpki.FileCACert))
	if err := os.WriteFile(filepath.Join(otherCA, brokerpki.FileCACert), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = brokerpki.ServerTLS(otherCA)
	for _, want := range []string{"is not signed by the CA", filepath.Join(otherCA, brokerpki.FileServerCert),
		filepath.Join(otherCA, brokerpki.FileCACert), "--force"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("foreign CA: got %v, want it to mention %q", err, want)
		}
	}

	// A CA file that is not PEM.
	garbled := initDir(t)
	if err := os.WriteFile(filepath.Join(garbled, brokerpki.FileCACert), []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := brokerpki.ServerTLS(garbled); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("garbled CA: got %v", err)
	}
}
