package cmd

import (
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/deploybroker"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/join"
)

func init() {
	verbs = append(verbs, deploybroker.New, join.New)
}
