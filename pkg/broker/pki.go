package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/broker/auth"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

// Files in the data directory.
const (
	FileCACert     = "ca.crt"
	FileCAKey      = "ca.key"
	FileServerCert = "server.crt"
	FileServerKey  = "server.key"
	FileAdminToken = "admin.token"
)

// InitOptions configures Init.
type InitOptions struct {
	DataDir string
	// SANs are extra DNS names or IPs for the server certificate, besides
	// localhost and 127.0.0.1.
	SANs []string
	// Force replaces an existing CA, server certificate and admin token.
	Force bool
}

// Init creates the CA, the server certificate and the admin credential in
// opts.DataDir and stores the credential's hash. It returns the admin token.
func Init(opts InitOptions) (string, error) {
	dir := opts.DataDir
	if dir == "" {
		return "", errors.New("no data dir")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create data dir: %w", err)
	}
	caPath := filepath.Join(dir, FileCACert)
	if _, err := os.Stat(caPath); err == nil && !opts.Force {
		return "", fmt.Errorf("%s already exists; the broker is initialised (use --force to replace its CA, server certificate and admin token)", caPath)
	}
	st, err := store.Create(dir)
	if err != nil {
		return "", err
	}
	defer st.Close()

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
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
		return "", fmt.Errorf("create CA: %w", err)
	}
	ca, _ := x509.ParseCertificate(caDER)

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "tunnelmesh broker"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(5, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	for _, s := range opts.SANs {
		if ip := net.ParseIP(s); ip != nil {
			srvTmpl.IPAddresses = append(srvTmpl.IPAddresses, ip)
		} else if s != "" {
			srvTmpl.DNSNames = append(srvTmpl.DNSNames, s)
		}
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		return "", fmt.Errorf("create server certificate: %w", err)
	}

	admin := auth.NewAdmin()
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{FileCAKey, keyPEM(caKey), 0o600},
		{FileCACert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644},
		{FileServerKey, keyPEM(srvKey), 0o600},
		{FileServerCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}), 0o644},
		{FileAdminToken, []byte(admin + "\n"), 0o600},
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return "", err
		}
	}
	err = st.Commit(context.Background(), []store.Change{{Kind: store.KindMeta, Key: metaAdminHash, Value: []byte(auth.Hash(admin))}}, currentRevision(st), 0)
	if err != nil {
		return "", fmt.Errorf("store admin credential hash: %w", err)
	}
	return admin, nil
}

func currentRevision(st store.Store) int64 {
	s, err := st.Load(context.Background(), 0)
	if err != nil {
		return 0
	}
	return s.Revision
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

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ServerTLS loads the server certificate from a data dir.
func ServerTLS(dataDir string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dataDir, FileServerCert), filepath.Join(dataDir, FileServerKey))
	if err != nil {
		return nil, fmt.Errorf("load server certificate (run `broker init`?): %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
