package gateway

import (
	"os"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
)

// Data-plane tests run in a network namespace of their own (root only).
func TestMain(m *testing.M) { os.Exit(testbed.MainInNetns(m)) }
