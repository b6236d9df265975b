package cmd

import (
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/benchmark"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/deploybroker"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/diagnose"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/export"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/join"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/leave"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/policy"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/show"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/translate"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/verify"
)

func init() {
	verbs = append(verbs, deploybroker.New, join.New, export.New, export.NewUnexport, show.New, leave.New, leave.NewUninstall, diagnose.New, verify.New, benchmark.New, policy.New, translate.New)
}
