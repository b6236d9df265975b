package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

// storeFlags select and locate the broker's store.
type storeFlags struct {
	kind          string
	endpoints     []string
	ca, cert, key string
	prefix        string
	maxTxnOps     int
	maxReqBytes   int
}

const (
	storeBolt = "bolt"
	storeEtcd = "etcd"
)

func (f *storeFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.kind, "store", storeBolt, "where records live: bolt (one file in --data-dir, one broker) or etcd (--etcd-*, several broker replicas)")
	f.registerEtcd(fs)
}

func (f *storeFlags) registerEtcd(fs *pflag.FlagSet) {
	fs.StringSliceVar(&f.endpoints, "etcd-endpoints", nil, "etcd client URLs (comma-separated), e.g. https://etcd-0:2379,https://etcd-1:2379")
	fs.StringVar(&f.ca, "etcd-ca", "", "PEM CA that signed the etcd servers' certificates")
	fs.StringVar(&f.cert, "etcd-cert", "", "PEM client certificate for etcd")
	fs.StringVar(&f.key, "etcd-key", "", "PEM key of --etcd-cert")
	fs.StringVar(&f.prefix, "etcd-prefix", "/tunnelmesh", "etcd key prefix of this clusterset's records")
	fs.IntVar(&f.maxTxnOps, "etcd-max-txn-ops", store.DefaultEtcdMaxTxnOps, "the etcd servers' --max-txn-ops (operations per transaction)")
	fs.IntVar(&f.maxReqBytes, "etcd-max-request-bytes", store.DefaultEtcdMaxRequestBytes, "the etcd servers' --max-request-bytes (bytes per request)")
}

func (f *storeFlags) check() error {
	switch f.kind {
	case storeBolt:
		if len(f.endpoints) > 0 {
			return errors.New("--etcd-endpoints given with --store bolt; add --store etcd to keep records in etcd")
		}
	case storeEtcd:
		if len(f.endpoints) == 0 {
			return errors.New("--store etcd needs --etcd-endpoints")
		}
	default:
		return fmt.Errorf("--store %q: want bolt or etcd", f.kind)
	}
	return nil
}

func (f *storeFlags) etcdConfig() (store.EtcdConfig, error) {
	cfg := store.EtcdConfig{Endpoints: f.endpoints, Prefix: f.prefix, MaxTxnOps: f.maxTxnOps, MaxRequestBytes: f.maxReqBytes}
	if f.ca == "" && f.cert == "" && f.key == "" {
		return cfg, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return cfg, fmt.Errorf("--etcd-ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("--etcd-ca %s: no PEM certificate in it", f.ca)
		}
	}
	if (f.cert == "") != (f.key == "") {
		return cfg, errors.New("--etcd-cert and --etcd-key go together")
	}
	if f.cert != "" {
		kp, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return cfg, fmt.Errorf("--etcd-cert/--etcd-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{kp}
	}
	cfg.TLS = tc
	return cfg, nil
}

func (f *storeFlags) openEtcd(ctx context.Context, create bool) (*store.Etcd, error) {
	cfg, err := f.etcdConfig()
	if err != nil {
		return nil, err
	}
	return store.OpenEtcd(ctx, cfg, create)
}

// open opens the serving store. A bbolt store lives in dataDir; when the
// PKI lives elsewhere (--pki-dir, e.g. a mounted Secret) the first start of
// a deployment finds an empty data dir, and only then is a new, empty store
// created there; a data dir holding anything at all is never initialised
// again. An etcd store is likewise created on first start only with
// --pki-dir (the admin credential then comes from there).
func (f *storeFlags) open(ctx context.Context, dataDir string, pkiElsewhere bool, log *slog.Logger) (store.Store, error) {
	if f.kind == storeEtcd {
		return f.openEtcd(ctx, pkiElsewhere)
	}
	if pkiElsewhere {
		entries, err := os.ReadDir(dataDir)
		if errors.Is(err, fs.ErrNotExist) || err == nil && len(entries) == 0 {
			log.Warn("data dir is empty: creating a new, empty store (first start)", "dataDir", dataDir)
			return store.Create(dataDir)
		}
	}
	return store.OpenBolt(dataDir)
}

// parseStoreArg reads migrate's bolt:DIR or etcd[:PREFIX].
func parseStoreArg(flag, s string) (kind, arg string, err error) {
	kind, arg, _ = strings.Cut(s, ":")
	switch {
	case kind == storeBolt && arg != "":
		return kind, arg, nil
	case kind == storeEtcd:
		return kind, arg, nil
	}
	return "", "", fmt.Errorf("%s %q: want bolt:DATA_DIR or etcd[:PREFIX] (etcd endpoints and TLS from --etcd-*)", flag, s)
}
