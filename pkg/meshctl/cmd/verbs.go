package cmd

import (
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/deploybroker"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/join"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/show"
)

func init() {
	verbs = append(verbs, deploybroker.New, join.New, show.New)
}
