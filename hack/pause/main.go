// Command pause is the sandbox ("pause") container of the local cluster's
// real node: the process that holds a pod's namespaces while its containers
// come and go. It waits for SIGTERM or SIGINT and, being PID 1 of the pod
// when the pod shares its PID namespace, reaps orphaned children.
// Test infrastructure: it is not part of the operator's image or bundle.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
