// Command meshctl is tunnelmesh's CLI; see pkg/meshctl.
package main

import (
	"os"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd"
)

func main() { os.Exit(cmd.Main(os.Args[1:], cli.StdStreams())) }
