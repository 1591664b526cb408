// Command kubectl-nodeaccess is the nodeaccess-operator kubectl plugin:
// `kubectl nodeaccess who|status|grant|revoke|known-hosts|ssh-config`.
// Installed on the PATH (or with krew), kubectl runs it as `kubectl nodeaccess`.
package main

import (
	"context"
	"os"
	"os/signal"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/nodeaccess/nodeaccess-operator/internal/plugin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := plugin.Run(ctx, os.Args[1:], genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	stop()
	os.Exit(code)
}
