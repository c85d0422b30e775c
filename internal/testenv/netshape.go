package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// Link is a network namespace joined to the host by a veth pair, with tbf
// rate limits on both ends (this kernel has no netem: delay comes from
// toxiproxy, see StartShapedRegistry).
type Link struct {
	// Namespace is the network namespace name (for `ip netns exec`).
	Namespace string
	// HostVeth and NSVeth are the two ends of the veth pair.
	HostVeth, NSVeth string
	// HostIP and NSIP are their IPv4 addresses (a /30).
	HostIP, NSIP string

	t testing.TB
}

// NewLink creates the namespace and veth pair, unshaped, and removes them
// when the test ends.
func NewLink(t testing.TB) *Link {
	t.Helper()
	RequireRoot(t)
	id := randomHex(3)
	hostIP, nsIP := randomSubnet()
	l := &Link{
		Namespace: "lzs-" + id,
		HostVeth:  "lzh" + id,
		NSVeth:    "lzn" + id,
		HostIP:    hostIP,
		NSIP:      nsIP,
		t:         t,
	}
	t.Cleanup(l.remove)
	steps := [][]string{
		{"ip", "netns", "add", l.Namespace},
		{"ip", "link", "add", l.HostVeth, "type", "veth", "peer", "name", l.NSVeth},
		{"ip", "link", "set", l.NSVeth, "netns", l.Namespace},
		{"ip", "addr", "add", l.HostIP + "/30", "dev", l.HostVeth},
		{"ip", "link", "set", l.HostVeth, "up"},
		{"ip", "-n", l.Namespace, "addr", "add", l.NSIP + "/30", "dev", l.NSVeth},
		{"ip", "-n", l.Namespace, "link", "set", l.NSVeth, "up"},
		{"ip", "-n", l.Namespace, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			t.Fatalf("setting up link: %v", err)
		}
	}
	return l
}

// Shape puts a tbf qdisc limiting both directions to rateBits per second.
// The burst covers 10 ms at that rate, and at least a 64 KiB GSO packet.
func (l *Link) Shape(rateBits int64) error {
	burst := max(rateBits/8/100, 128<<10)
	tbf := []string{"tbf", "rate", fmt.Sprintf("%dbit", rateBits), "burst", fmt.Sprint(burst), "latency", "100ms"}
	if err := run(append([]string{"tc", "qdisc", "replace", "dev", l.HostVeth, "root"}, tbf...)...); err != nil {
		return fmt.Errorf("shaping %s: %w", l.HostVeth, err)
	}
	if err := run(append([]string{"tc", "-n", l.Namespace, "qdisc", "replace", "dev", l.NSVeth, "root"}, tbf...)...); err != nil {
		return fmt.Errorf("shaping %s: %w", l.NSVeth, err)
	}
	return nil
}

// Unshape removes the rate limits (e.g. to push test images quickly).
func (l *Link) Unshape() error {
	_ = run("tc", "qdisc", "del", "dev", l.HostVeth, "root")
	_ = run("tc", "-n", l.Namespace, "qdisc", "del", "dev", l.NSVeth, "root")
	return nil
}

// Qdisc is one entry of `tc -s -j qdisc show`.
type Qdisc struct {
	Kind    string `json:"kind"`
	Bytes   int64  `json:"bytes"`
	Packets int64  `json:"packets"`
	Options struct {
		// Rate is in bytes per second.
		Rate int64 `json:"rate"`
	} `json:"options"`
}

// Qdiscs returns the root qdiscs of the host end (nsSide false) or the
// namespace end, with their statistics.
func (l *Link) Qdiscs(nsSide bool) ([]Qdisc, error) {
	args := []string{"tc", "-s", "-j", "qdisc", "show", "dev", l.HostVeth}
	if nsSide {
		args = []string{"tc", "-n", l.Namespace, "-s", "-j", "qdisc", "show", "dev", l.NSVeth}
	}
	out, err := exec.Command(args[0], args[1:]...).Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	var qs []Qdisc
	if err := json.Unmarshal(out, &qs); err != nil {
		return nil, fmt.Errorf("decoding tc output: %w", err)
	}
	return qs, nil
}

// Command returns a command running inside the namespace.
func (l *Link) Command(bin string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.Namespace, bin}, args...)...)
}

// remove deletes the veth pair (both ends go together) and the namespace.
// Processes inside are stopped by their own cleanups, registered later.
func (l *Link) remove() {
	_ = run("ip", "link", "del", l.HostVeth)
	if err := run("ip", "netns", "del", l.Namespace); err != nil {
		l.t.Logf("removing namespace: %v", err)
	}
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// randomSubnet picks a /30 in 10.213.0.0/16 and returns its two hosts.
func randomSubnet() (hostIP, nsIP string) {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	base := int(b[1] &^ 3)
	return fmt.Sprintf("10.213.%d.%d", b[0], base+1), fmt.Sprintf("10.213.%d.%d", b[0], base+2)
}
