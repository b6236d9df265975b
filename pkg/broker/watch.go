package broker

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/core"
)

// handleWatch streams NDJSON events after ?since=REV: a SNAPSHOT first when
// REV is 0 or no longer retained, then every change in revision order, and
// a BOOKMARK on idle streams.
func (b *Broker) handleWatch(w http.ResponseWriter, r *http.Request) {
	p, aerr := b.authenticate(r)
	if aerr != nil {
		b.writeError(w, r, aerr)
		return
	}
	var since int64
	if s := r.URL.Query().Get("since"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			b.writeError(w, r, &api.Error{Code: api.CodeBadRequest, Field: "since",
				Message: fmt.Sprintf("since=%q is not a revision (a non-negative integer)", s)})
			return
		}
		since = v
	}
	// The stream lives until the client goes, the broker drains, or the
	// credential is revoked (its cluster removed): every commit wakes the
	// stream, which then checks the credential first.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	release, ok := b.streams.open(p.credKey(), b.cfg.MaxWatchesPerCredential)
	if !ok {
		writeJSON(w, http.StatusTooManyRequests, &api.Error{Code: api.CodeTooManyRequests,
			Message: fmt.Sprintf("this credential already holds %d open watch streams, the most the broker allows; "+
				"close one (one watch per process is enough) or raise --max-watches-per-credential", b.cfg.MaxWatchesPerCredential)})
		return
	}
	defer release()
	b.metrics.watches.Inc()
	defer b.metrics.watches.Dec()
	if since > 0 {
		b.core.AwaitCatchUp(ctx, since)
	}
	if !p.valid(b.core.Auth()) { // revoked meanwhile
		b.writeError(w, r, errUnauthorized)
		return
	}
	rc := http.NewResponseController(w)
	// The server's ReadTimeout guards request reading; lift it so that it
	// can never cut a long-lived stream.
	_ = rc.SetReadDeadline(time.Time{})
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	write := func(lines [][]byte) error {
		// A watcher that cannot take a chunk in time is dropped; it
		// resumes from its last revision when it reconnects.
		_ = rc.SetWriteDeadline(time.Now().Add(b.cfg.WatchWriteTimeout))
		for _, l := range lines {
			if _, err := w.Write(l); err != nil {
				return err
			}
		}
		return rc.Flush()
	}
	bookmark := time.NewTicker(b.cfg.BookmarkInterval)
	defer bookmark.Stop()
	cursor := since
	for {
		if !p.valid(b.core.Auth()) {
			return // the credential was revoked: nothing more for it
		}
		lines, next, _, notify := b.core.Next(cursor, 1024)
		if len(lines) > 0 {
			if err := write(lines); err != nil {
				return
			}
			cursor = next
			if len(lines) == 1024 {
				continue
			}
			// Under a burst of commits, gather changes for a moment
			// rather than waking and flushing once per commit: with
			// many watchers the per-flush cost dominates. An idle
			// stream still gets its first change at once.
			if b.cfg.WatchCoalesce > 0 {
				t := time.NewTimer(b.cfg.WatchCoalesce)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return
				case <-b.draining:
					t.Stop()
					return
				}
			}
		}
		select {
		case <-notify:
		case <-bookmark.C:
			if err := write([][]byte{core.NewEventLine(api.Event{Type: api.EventBookmark, Revision: cursor})}); err != nil {
				return
			}
		case <-ctx.Done():
			return
		case <-b.draining:
			return
		}
	}
}
