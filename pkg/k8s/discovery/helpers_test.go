package discovery

import (
	"testing"
	"time"
)

func kubeapiEventually(t *testing.T, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reached in 10 s; last: %s", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
