// Package meshctl is tunnelmesh's CLI as Go APIs the CLI, the e2e tests and
// other programs call the same way. cmd/meshctl only calls cmd.Main.
//
//	cli/           what/fix errors, exit codes (0 ok, 1 failure, 2 usage, 3 refused
//	               before any change, 4 changed but a wait timed out), streams
//	output/        -o table|json|yaml
//	progress/      one line per step with its duration; a spinner on a TTY
//	kube/          --kubeconfig/--context, server-side apply of deploy/, node and pod checks
//	access/        reaching the broker: broker-info, the member Secret, flags; broker errors explained
//	brokerdeploy/  deploy-broker: InCluster and Local
//	member/        Join, Leave, Uninstall (seams: CIDRDetector, Waiter, CorefileEditor)
//	svcexport/     export/unexport service
//	view/          show: tables (imports from the cluster itself) and the DOT graph
//	diagnose/      diagnose: Gather (thin) → Facts → Run (pure checks) → findings
//	probe/         verify and benchmark: test pods in two clusters, cleaned up
//	netprobe/      what the test pods run (netclient image): steps, throughput, latency
//	version/       which meshctl this is (set at build time)
//	internal/      test kits of meshctl's own tests: a real API server (testenv), golden files
//	cmd/           the cobra tree, one package per verb
package meshctl
