package cmd

import (
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/deploybroker"
)

func init() {
	verbs = append(verbs, deploybroker.New)
}
