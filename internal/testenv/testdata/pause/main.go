// Command pause stands in for the Kubernetes pause program as PID 1 of a
// critest pod sandbox: it waits for SIGTERM or SIGINT and reaps orphans
// meanwhile. Unlike a shell loop it starts no child (critest counts the
// `sleep` processes a pod's containers can see).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
