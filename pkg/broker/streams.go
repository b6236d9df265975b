package broker

import "sync"

// streamSet counts the open watch streams of each credential.
type streamSet struct {
	mu     sync.Mutex
	byCred map[string]int
}

// open registers a stream of cred. It refuses (ok false) when cred
// already holds max streams; release unregisters.
func (s *streamSet) open(cred string, max int) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byCred == nil {
		s.byCred = map[string]int{}
	}
	if s.byCred[cred] >= max {
		return nil, false
	}
	s.byCred[cred]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.byCred[cred]--; s.byCred[cred] <= 0 {
			delete(s.byCred, cred)
		}
	}, true
}
