package core

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

// request is one write waiting for the writer.
type request struct {
	w    Write
	done chan answer // buffered: the writer never blocks on it
	// abandoned: Do stopped waiting; a write not started is dropped.
	abandoned atomic.Bool
	// Writer only: a write whose first part committed and that continues.
	started bool
	res     Result
	cont    func(*Txn) error
}

type answer struct {
	res  Result
	err  error
	skip bool // dropped: nobody waits for it
}

// maxConflictRetries bounds how often one transaction is run again after
// other replicas won the commit; each retry follows at least one commit.
const maxConflictRetries = 50

func (c *Core) writeLoop() {
	defer c.wg.Done()
	for {
		var first *request
		select {
		case first = <-c.reqs:
		case batch, ok := <-c.writer.follow:
			c.applyFollowed(batch, ok)
			continue
		case <-c.closing:
			c.failPending()
			return
		}
		pending := []*request{first}
	drain:
		for len(pending) < c.cfg.MaxBatch {
			select {
			case r := <-c.reqs:
				pending = append(pending, r)
			default:
				break drain
			}
		}
		for len(pending) > 0 {
			pending = c.commitPart(pending)
		}
	}
}

func (c *Core) failPending() {
	for {
		select {
		case r := <-c.reqs:
			r.done <- answer{err: ErrUnavailable}
		default:
			return
		}
	}
}

// commitPart runs the writes at the front of pending that fit in one
// transaction, commits them and answers them. It returns what is left:
// the writes that continue (Txn.Continue) first, then those that did not
// fit. When another replica committed first (store.ErrConflict), the
// transaction is dropped, the other commits are applied and the same
// writes run again: every write is validated against exactly the state it
// commits on top of, and none is lost on the way.
func (c *Core) commitPart(pending []*request) []*request {
	for attempt := 0; ; attempt++ {
		t := newTxn(c.state.st, c.maxChanges, c.maxBytes)
		answers := make([]answer, 0, len(pending))
		for _, r := range pending {
			if !r.started && r.abandoned.Load() {
				answers = append(answers, answer{skip: true})
				continue
			}
			m := t.mark()
			a := c.run(t, r)
			if a.err == nil && t.full() {
				t.rollback(m)
				delete(t.next, r)
				if len(answers) > 0 {
					break // the next transaction takes it
				}
				a = answer{err: &api.Error{Code: api.CodeTooLarge, Message: fmt.Sprintf(
					"this change is too large for one store transaction (at most %d changes of %d bytes in all); make it smaller", c.maxChanges, c.maxBytes)}}
			}
			if a.err != nil {
				t.rollback(m)
				delete(t.next, r)
				if r.started { // a continuation failed: the write's answer stands
					c.log.Warn("continuing a write failed; what is left is finished later", "route", r.w.Route, "err", a.err)
					a = answer{res: r.res}
				}
			}
			answers = append(answers, a)
		}
		part, rest := pending[:len(answers)], pending[len(answers):]
		if t.size() == 0 {
			return append(c.answer(part, answers, t), rest...)
		}
		if ch, ok := t.outcomeChange(time.Now()); ok {
			t.changes = append(t.changes, ch)
		}
		begin := time.Now()
		cctx, cancel := context.WithTimeout(context.Background(), c.cfg.CommitTimeout)
		version, err := c.store.Commit(cctx, c.writer.version, t.changes, t.rev, c.cfg.LogRetention)
		cancel()
		c.metrics.commitSeconds.Observe(time.Since(begin).Seconds())
		if errors.Is(err, store.ErrConflict) {
			c.metrics.conflicts.Inc()
			if attempt < maxConflictRetries && c.catchUp() {
				continue
			}
			return append(c.fail(part, answers, errBusy), rest...)
		}
		if err != nil {
			c.health.fail(err)
			c.log.Error("commit failed", "err", err, "changes", len(t.changes))
			switch {
			case errors.Is(err, store.ErrOutcomeUnknown):
				// It may still commit; if it does, it arrives through
				// Follow like another replica's commit, and the next
				// commit on the old base gets ErrConflict.
				return append(c.fail(part, answers, errUnknown), rest...)
			case errors.Is(err, store.ErrTooLarge):
				return append(c.fail(part, answers, &api.Error{Code: api.CodeInternal,
					Message: "this change is too large for one store transaction: " + err.Error()}), rest...)
			}
			return append(c.fail(part, answers, errNotWritten), rest...)
		}
		c.health.ok()
		c.metrics.batchSize.Observe(float64(len(part)))
		c.publish(t)
		c.setVersion(max(c.writer.version, version))
		return append(c.answer(part, answers, t), rest...)
	}
}

// run runs one write (or its continuation) in t.
func (c *Core) run(t *Txn, r *request) answer {
	t.cur = r
	if r.started {
		if err := r.cont(t); err != nil {
			return answer{err: err}
		}
		return answer{res: r.res}
	}
	if r.w.Key != "" {
		if o := t.outcome(outcomeID(r.w.Key)); o != nil {
			c.metrics.replayed.Inc()
			res, err := replay(r.w.Key, r.w.Caller, r.w.Route, o)
			return answer{res: res, err: err}
		}
	}
	m := t.mark()
	res, err := r.w.Op(t)
	if err != nil {
		return answer{err: err}
	}
	if r.w.Key != "" && len(t.changes) > m.changes {
		o := &outcome{ID: outcomeID(r.w.Key), Caller: r.w.Caller, Route: r.w.Route, Status: res.Status}
		seal(r.w.Key, o, res.Body)
		t.outcomes = append(t.outcomes, o)
	}
	return answer{res: res}
}

// replay answers a write from its recorded outcome.
func replay(key, caller, route string, o *outcome) (Result, error) {
	if o.Caller != caller || o.Route != route {
		return Result{}, &api.Error{Code: api.CodeInvalid, Field: "Idempotency-Key",
			Message: "this Idempotency-Key was used for another request; send a new random key with every new write"}
	}
	body, err := unseal(key, o)
	if err != nil {
		return Result{}, fmt.Errorf("open recorded outcome: %w", err)
	}
	return Result{Status: o.Status, Body: body}, nil
}

// answer answers the writes of a committed (or empty) transaction and
// returns those that continue.
func (c *Core) answer(part []*request, answers []answer, t *Txn) (continuing []*request) {
	for i, r := range part {
		a := answers[i]
		if a.skip {
			continue
		}
		if fn, ok := t.next[r]; ok && a.err == nil {
			if !r.started {
				r.started, r.res = true, a.res
			}
			r.cont = fn
			continuing = append(continuing, r)
			continue
		}
		r.done <- a
	}
	return continuing
}

// fail answers the writes of a transaction that did not commit: those not
// started get err, continuing ones the answer of their committed part.
func (c *Core) fail(part []*request, answers []answer, err error) []*request {
	for i, r := range part {
		switch {
		case answers[i].skip:
		case r.started:
			c.log.Warn("continuing a write failed; what is left is finished later", "route", r.w.Route, "err", err)
			r.done <- answer{res: r.res}
		case answers[i].err != nil:
			r.done <- answers[i] // its own error: nothing of it was to be written
		default:
			r.done <- answer{err: err}
		}
	}
	return nil
}

// publish folds a committed transaction into the committed state and the
// watch log, and replaces the credential table if it changed.
func (c *Core) publish(t *Txn) {
	c.state.Lock()
	if err := t.fold(c.state.st); err != nil {
		c.log.Error("fold commit", "err", err) // only outcomes decode here, and this process encoded them
	}
	c.appendLog(t.events, t.rev)
	c.state.Unlock()
	c.updateAuth(t.changes)
}

// updateAuth replaces the credential table after changes to it.
func (c *Core) updateAuth(changes []store.Change) {
	for _, ch := range changes {
		if ch.Kind == store.KindCredential || ch.Kind == store.KindMeta && ch.Key == MetaAdminHash {
			c.auth.Store(newAuthTable(c.state.st))
			return
		}
	}
}
