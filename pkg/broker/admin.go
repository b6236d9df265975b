package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tunnelmesh/tunnelmesh/pkg/broker/auth"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/core"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

// SetAdminToken makes token the admin credential of the store (it keeps
// only its hash); nothing is written when it already is. A broker whose
// PKI comes from elsewhere than its data directory (a Kubernetes Secret,
// see `serve --pki-dir`) seeds a fresh data directory this way.
func SetAdminToken(ctx context.Context, st store.Store, token string) error {
	token = strings.TrimSpace(token)
	if token == "" {
		return fmt.Errorf("empty admin credential")
	}
	h := auth.Hash(token)
	// Replicas starting together on one etcd store race here; the loser
	// reads again (and then usually finds the hash written).
	for attempt := 0; ; attempt++ {
		s, err := st.Load(ctx, 0)
		if err != nil {
			return err
		}
		if string(s.Records[store.KindMeta][core.MetaAdminHash]) == h {
			return nil
		}
		_, err = st.Commit(ctx, s.Version, []store.Change{{Kind: store.KindMeta, Key: core.MetaAdminHash, Value: []byte(h)}}, s.Revision, 0)
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return fmt.Errorf("store admin credential hash: %w", err)
		}
		return nil
	}
}
