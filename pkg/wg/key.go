package wg

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tunnelmesh/tunnelmesh/pkg/fsutil"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// LoadOrCreateKey reads the base64 private key at path, or generates one and
// writes it there (mode 0600) so a restarted gateway keeps its identity.
func LoadOrCreateKey(path string) (wgtypes.Key, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, perr := wgtypes.ParseKey(strings.TrimSpace(string(b)))
		if perr != nil {
			return wgtypes.Key{}, fmt.Errorf("key file %s holds no valid WireGuard key (%v); fix or remove it", path, perr)
		}
		return k, nil
	}
	if !os.IsNotExist(err) {
		return wgtypes.Key{}, fmt.Errorf("read key file: %w", err)
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("generate key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return wgtypes.Key{}, fmt.Errorf("create key dir: %w", err)
	}
	// Durable before use: a key lost in a crash after peers learned it
	// would cut the cluster off until every broker record is refreshed.
	if err := fsutil.WriteFileAtomic(path, []byte(k.String()+"\n"), 0o600); err != nil {
		return wgtypes.Key{}, fmt.Errorf("write key file: %w", err)
	}
	return k, nil
}
