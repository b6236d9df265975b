package broker

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// snapshotWriter is a Store that can copy itself consistently while
// serving (store.Bolt can).
type snapshotWriter interface {
	WriteSnapshot(w io.Writer) (int64, error)
}

// handleBackup serves GET /v1/backup (admin): a consistent copy of the
// store file, taken in one read transaction while writes go on.
func (b *Broker) handleBackup(w http.ResponseWriter, r *http.Request) {
	if err := b.requireAdmin(r); err != nil {
		b.writeError(w, r, err)
		return
	}
	sw, ok := b.store.(snapshotWriter)
	if !ok {
		b.writeError(w, r, &api.Error{Code: api.CodeNotFound, Message: "this broker's store cannot be backed up through the API; an etcd store is backed up with etcd's own tools " +
			"(`etcdctl snapshot save`), or copied to a bbolt file with `broker migrate --from etcd:PREFIX --to bolt:DIR`"})
		return
	}
	// A large store may take longer than an ordinary response.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(max(b.cfg.ResponseTimeout, 10*time.Minute)))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Tunnelmesh-Revision", strconv.FormatInt(b.Revision(), 10))
	n, err := sw.WriteSnapshot(w)
	if err != nil {
		// Headers are out; a cut body is what the client sees (it verifies the file).
		b.log.Error("backup failed", "err", err, "bytes", n)
		return
	}
	b.log.Info("backup served", "bytes", n)
}
