package broker

import (
	"context"
	"sync"
)

// Keys of credentials in the stream table.
const credKeyAdmin = "admin"

func credKeyCluster(id string) string { return "cluster/" + id }

func (p principal) credKey() string {
	if p.admin {
		return credKeyAdmin
	}
	return credKeyCluster(p.cluster)
}

// streamSet tracks the open watch streams of each credential.
type streamSet struct {
	mu     sync.Mutex
	byCred map[string]map[*context.CancelFunc]struct{}
}

// open registers a stream of cred, ended by calling cancel. It refuses
// (ok false) when cred already holds max streams; release unregisters.
func (s *streamSet) open(cred string, max int, cancel context.CancelFunc) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byCred == nil {
		s.byCred = map[string]map[*context.CancelFunc]struct{}{}
	}
	set := s.byCred[cred]
	if len(set) >= max {
		return nil, false
	}
	if set == nil {
		set = map[*context.CancelFunc]struct{}{}
		s.byCred[cred] = set
	}
	h := &cancel
	set[h] = struct{}{}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(set, h)
		if len(s.byCred[cred]) == 0 {
			delete(s.byCred, cred)
		}
	}, true
}

// end ends every open stream of cred.
func (s *streamSet) end(cred string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for h := range s.byCred[cred] {
		(*h)()
	}
}
