// Package brokerpki makes and loads the broker's PKI: a CA, a server
// certificate it signs and the admin credential, kept as the files of a
// PKI directory (`broker init`) or as the keys of the broker Secret that
// meshctl makes for an in-cluster broker. It needs nothing of the broker.
package brokerpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/fsutil"
)

// Files of a PKI directory, also the keys of the broker Secret.
const (
	FileCACert     = "ca.crt"
	FileCAKey      = "ca.key"
	FileServerCert = "server.crt"
	FileServerKey  = "server.key"
	FileAdminToken = "admin.token"
)

// Files lists every file Generate makes, in the order WriteDir writes
// them: the CA certificate, which marks an initialised directory, after
// its key.
var Files = []string{FileCAKey, FileCACert, FileServerKey, FileServerCert, FileAdminToken}

// Generate makes a new CA, a server certificate it signs for sans (besides
// localhost, 127.0.0.1 and ::1; see ParseSANs) and an admin credential,
// and returns them as file contents by name (Files).
func Generate(sans []string) (map[string][]byte, error) {
	dnsNames, ips, err := ParseSANs(sans)
	if err != nil {
		return nil, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "tunnelmesh broker CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	ca, _ := x509.ParseCertificate(caDER)

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "tunnelmesh broker"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(5, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create server certificate: %w", err)
	}

	admin := api.NewAdminCredential()
	return map[string][]byte{
		FileCAKey:      keyPEM(caKey),
		FileCACert:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		FileServerKey:  keyPEM(srvKey),
		FileServerCert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		FileAdminToken: []byte(admin + "\n"),
	}, nil
}

// WriteDir writes files (as Generate returns them) into dir, each
// atomically; keys and the admin credential are readable by the owner only.
func WriteDir(dir string, files map[string][]byte) error {
	for _, name := range Files {
		data, ok := files[name]
		if !ok {
			continue
		}
		mode := os.FileMode(0o600)
		if name == FileCACert || name == FileServerCert {
			mode = 0o644
		}
		if err := fsutil.WriteFileAtomic(filepath.Join(dir, name), data, mode); err != nil {
			return err
		}
	}
	return nil
}

// AdminToken is the admin credential among files.
func AdminToken(files map[string][]byte) string {
	return strings.TrimSpace(string(files[FileAdminToken]))
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func keyPEM(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// defaultSANs are in every server certificate, for clients on the host.
var defaultSANs = []string{"localhost", "127.0.0.1", "::1"}

// ParseSANs returns the server certificate's DNS names and IP addresses:
// the defaults (localhost, 127.0.0.1, ::1) and extra, each once. It
// refuses what is neither an IP address nor a DNS name — URLs, host:port,
// bracketed IPv6, zones, invalid labels — saying what to write instead.
func ParseSANs(extra []string) (dnsNames []string, ips []net.IP, err error) {
	seenIP := map[netip.Addr]bool{}
	seenDNS := map[string]bool{}
	for _, s := range append(append([]string{}, defaultSANs...), extra...) {
		if a, perr := netip.ParseAddr(s); perr == nil {
			if a.Zone() != "" {
				return nil, nil, fmt.Errorf("SAN %q: IPv6 zones are local to one host; give the address without %%%s", s, a.Zone())
			}
			if a.IsUnspecified() {
				return nil, nil, fmt.Errorf("SAN %q: the unspecified address is not one clients connect to; give the broker's real address", s)
			}
			a = a.Unmap()
			if !seenIP[a] {
				seenIP[a] = true
				ips = append(ips, net.IP(a.AsSlice()))
			}
			continue
		}
		name, err := sanDNSName(s)
		if err != nil {
			return nil, nil, err
		}
		if !seenDNS[name] {
			seenDNS[name] = true
			dnsNames = append(dnsNames, name)
		}
	}
	return dnsNames, ips, nil
}

// sanDNSName checks a DNS name for a certificate (a leading "*." wildcard
// allowed) and returns it in lower case.
func sanDNSName(s string) (string, error) {
	bad := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("SAN %q: %s", s, fmt.Sprintf(format, args...))
	}
	switch {
	case s == "":
		return bad("empty; give a DNS name or an IP address")
	case strings.Contains(s, "://"):
		if u, err := url.Parse(s); err == nil && u.Hostname() != "" {
			return bad("a URL; give only its host, %s", u.Hostname())
		}
		return bad("a URL; give only its host name")
	case strings.HasPrefix(s, "["):
		inner := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
		if h, _, err := net.SplitHostPort(s); err == nil {
			inner = h
		}
		if a, err := netip.ParseAddr(inner); err == nil {
			return bad("write IPv6 addresses without brackets (or port): %s", a)
		}
		return bad("brackets belong in URLs only; give an IP address or a DNS name")
	case strings.Contains(s, ":"):
		if h, _, err := net.SplitHostPort(s); err == nil {
			return bad("has a port; give the host only, %s", h)
		}
		return bad("not an IP address or a DNS name")
	case strings.HasSuffix(s, "."):
		return bad("write the name without the trailing dot, %s", strings.TrimSuffix(s, "."))
	case len(s) > 253:
		return bad("longer than 253 characters")
	}
	name := strings.ToLower(s)
	labels := strings.Split(name, ".")
	for i, l := range labels {
		if l == "*" && i == 0 && len(labels) > 2 {
			continue
		}
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return bad("label %q must be 1-63 letters, digits or '-', not starting or ending with '-'", l)
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				if c == '*' {
					return bad("a wildcard may only be the whole first label of a name with at least three labels (*.example.com)")
				}
				return bad("%q is not allowed in a DNS name (letters, digits, '-' and '.')", c)
			}
		}
	}
	// "10.0.0" or "1.2.3.999" are mistyped addresses, not names.
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return bad("not a valid IP address, and a DNS name cannot end in a numeric label")
	}
	return name, nil
}

// ServerTLS loads the server certificate from a data dir and checks that
// it is signed by the data dir's CA: clients trust only that CA, so a
// broker serving any other certificate would be unreachable.
func ServerTLS(dataDir string) (*tls.Config, error) {
	caPath := filepath.Join(dataDir, FileCACert)
	certPath, keyPath := filepath.Join(dataDir, FileServerCert), filepath.Join(dataDir, FileServerKey)
	reinit := fmt.Sprintf("`broker init --data-dir %s --force` (which also replaces the CA and the admin credential; give the new CA to every member)", dataDir)
	caPEM, err := os.ReadFile(caPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no CA certificate %s: run `broker init --data-dir %s` to set up a new broker, or restore %s from a backup of this broker", caPath, dataDir, FileCACert)
	}
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("CA certificate %s holds no PEM certificate: restore it from a backup, or run %s", caPath, reinit)
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("load server certificate %s and key %s: %w; restore them from a backup, or run %s", certPath, keyPath, err, reinit)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse server certificate %s: %w", certPath, err)
		}
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(err, &unknown):
		return nil, fmt.Errorf("server certificate %s is not signed by the CA %s, so clients that trust that CA would refuse it: put back the %s and %s that `broker init` made with this CA, or run %s",
			certPath, caPath, FileServerCert, FileServerKey, reinit)
	case err != nil:
		return nil, fmt.Errorf("server certificate %s does not verify against the CA %s: %v; run %s", certPath, caPath, err, reinit)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
