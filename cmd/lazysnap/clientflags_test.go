package main

import (
	"testing"
)

// TestContainerdFlagDefaults resolves address and namespace like ctr: the
// environment over the built-in default.
func TestContainerdFlagDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want containerdFlags
	}{
		{"none", nil, containerdFlags{"/run/containerd/containerd.sock", "default"}},
		{"both", map[string]string{envContainerdAddress: "/run/k3s/containerd.sock", envContainerdNamespace: "k8s.io"},
			containerdFlags{"/run/k3s/containerd.sock", "k8s.io"}},
		{"namespace only", map[string]string{envContainerdNamespace: "buildkit"},
			containerdFlags{"/run/containerd/containerd.sock", "buildkit"}},
		{"empty is unset", map[string]string{envContainerdAddress: ""},
			containerdFlags{"/run/containerd/containerd.sock", "default"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := containerdFlagDefaults(func(k string) string { return tc.env[k] })
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestPullFlagsOverEnv checks the order on the real pull command: a flag
// beats the environment, which beats the default.
func TestPullFlagsOverEnv(t *testing.T) {
	t.Setenv(envContainerdAddress, "/env/containerd.sock")
	t.Setenv(envContainerdNamespace, "envns")
	for _, tc := range []struct {
		args []string
		want containerdFlags
	}{
		{nil, containerdFlags{"/env/containerd.sock", "envns"}},
		{[]string{"--address", "/flag.sock"}, containerdFlags{"/flag.sock", "envns"}},
		{[]string{"-n", "flagns", "--address", "/flag.sock"}, containerdFlags{"/flag.sock", "flagns"}},
	} {
		cmd := newPullCommand()
		if err := cmd.ParseFlags(tc.args); err != nil {
			t.Fatal(err)
		}
		got := containerdFlags{cmd.Flags().Lookup("address").Value.String(),
			cmd.Flags().Lookup("namespace").Value.String()}
		if got != tc.want {
			t.Errorf("args %q: got %+v, want %+v", tc.args, got, tc.want)
		}
	}
}
