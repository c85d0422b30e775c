package testenv

import (
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Restart stops containerd with SIGTERM, as `systemctl restart containerd`
// does (running containers' shims live on and are reconnected), and starts
// it again with the same config, waiting until it answers.
func (c *Containerd) Restart() {
	c.t.Helper()
	c.stopDaemon()
	c.startAgain()
}

// Reboot stops what a reboot of the node stops: every container, then
// containerd and the shims left. Start it again with StartAgain.
func (c *Containerd) Reboot() {
	c.t.Helper()
	c.stopContainers()
	c.stopDaemon()
	c.killShims()
}

// StartAgain starts containerd after Reboot.
func (c *Containerd) StartAgain() {
	c.t.Helper()
	c.startAgain()
}

func (c *Containerd) stopDaemon() {
	cmd := c.cmd
	_ = cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan struct{})
	go func() {
		_, _ = cmd.Process.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		c.t.Logf("containerd ignored SIGTERM for 30s; killing it")
		_ = cmd.Process.Kill()
		<-exited
	}
}

func (c *Containerd) startAgain() {
	cfg := c.cmd.Args[len(c.cmd.Args)-1]
	c.cmd = exec.Command(Tool(c.t, "containerd"), "--config", cfg)
	c.cmd.Env = append(os.Environ(), "PATH="+ToolsDir()+":"+os.Getenv("PATH"))
	StartProcess(c.t, "containerd", c.cmd)
	// Cleanups run last-in first-out: containers go while this daemon runs.
	c.t.Cleanup(c.stopContainers)
	c.waitReady()
}
