// Package deploy holds lazysnap's Kubernetes manifests; its test decodes
// each strictly into its Kubernetes type.
package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// kustomization is the part of kustomize's Kustomization this repo uses.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

func decodeStrict(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestManifestsDecodeStrictly decodes every resource of both
// kustomizations into its Kubernetes type, rejecting unknown fields.
func TestManifestsDecodeStrictly(t *testing.T) {
	seen := map[string]bool{}
	for _, dir := range []string{".", "uninstall"} {
		var k kustomization
		decodeStrict(t, filepath.Join(dir, "kustomization.yaml"), &k)
		if k.Namespace != "lazysnap-system" || len(k.Images) != 1 || k.Images[0].Name != "lazysnap/lazysnap-installer" {
			t.Errorf("%s/kustomization.yaml: namespace %q, images %+v", dir, k.Namespace, k.Images)
		}
		for _, r := range k.Resources {
			path := filepath.Join(dir, r)
			seen[filepath.Clean(path)] = true
			var meta struct {
				Kind string `json:"kind"`
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal(data, &meta); err != nil {
				t.Fatal(err)
			}
			switch meta.Kind {
			case "Namespace":
				decodeStrict(t, path, &corev1.Namespace{})
			case "ServiceAccount":
				decodeStrict(t, path, &corev1.ServiceAccount{})
			case "DaemonSet":
				var ds appsv1.DaemonSet
				decodeStrict(t, path, &ds)
				checkDaemonSet(t, path, &ds)
			default:
				t.Errorf("%s: unexpected kind %q", path, meta.Kind)
			}
		}
	}
	// Every manifest in the tree is part of a kustomization.
	files, _ := filepath.Glob("*.yaml")
	more, _ := filepath.Glob("uninstall/*.yaml")
	for _, f := range append(files, more...) {
		if !seen[f] && filepath.Base(f) != "kustomization.yaml" {
			t.Errorf("%s is in no kustomization", f)
		}
	}
}

// checkDaemonSet checks what the installer relies on in its pod.
func checkDaemonSet(t *testing.T, path string, ds *appsv1.DaemonSet) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	if !spec.HostPID || len(spec.Containers) != 1 {
		t.Fatalf("%s: want hostPID and one container", path)
	}
	c := spec.Containers[0]
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Errorf("%s: container is not privileged", path)
	}
	if c.Image != "lazysnap/lazysnap-installer:latest" {
		t.Errorf("%s: image %q is not the one kustomize replaces", path, c.Image)
	}
	if !slices.Contains(c.Args, "--host-root=/host") || !slices.Contains(c.Args, "--nsenter") {
		t.Errorf("%s: args %q", path, c.Args)
	}
	volumes := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath == nil {
			t.Errorf("%s: volume %s is not a hostPath", path, v.Name)
			continue
		}
		volumes[v.Name] = v.HostPath.Path
	}
	for _, m := range c.VolumeMounts {
		hostPath, ok := volumes[m.Name]
		if !ok {
			t.Errorf("%s: mount %s has no volume", path, m.Name)
		}
		// The installer sees host path P at /host/P.
		if m.MountPath != "/host"+hostPath {
			t.Errorf("%s: %s mounted at %s, want /host%s", path, hostPath, m.MountPath, hostPath)
		}
	}
	for _, need := range []string{"/etc/containerd", "/var/lib/lazysnap", "/run/lazysnap", "/dev/fuse", "/usr/local/bin", "/etc/systemd/system", "/run/systemd"} {
		if !slices.Contains(mapsValues(volumes), need) {
			t.Errorf("%s: no hostPath volume for %s", path, need)
		}
	}
	if slices.Contains(c.Args, "run") {
		if c.ReadinessProbe == nil || c.LivenessProbe == nil || c.ReadinessProbe.HTTPGet == nil ||
			!strings.HasPrefix(c.ReadinessProbe.HTTPGet.Path, "/readyz") || c.LivenessProbe.HTTPGet.Path != "/healthz" {
			t.Errorf("%s: installer lacks the readiness and liveness probes", path)
		}
	}
}

func mapsValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
