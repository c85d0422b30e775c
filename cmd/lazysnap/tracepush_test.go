package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/lazysnap/lazysnap/fs/sharedtrace"
	"github.com/lazysnap/lazysnap/fs/trace"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestTraceExportPush pushes a saved trace as a referrer of the image's
// manifest: the artifact holds the trace file byte for byte, and a Finder
// (fused's side) finds it.
func TestTraceExportPush(t *testing.T) {
	reg := testenv.StartRegistry(t)
	image := reg.Ref("app:v1")
	ref, err := name.ParseReference(image)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	root := saveTrace(t, image, "/usr/bin/app", "/etc/app.conf")
	out, err := runCLI(t, "trace", "export", "--push", "--plain-http", "--root", root, image)
	if err != nil {
		t.Fatal(err)
	}
	art := ref.Context().Digest(strings.TrimSpace(out))
	m, content := readArtifact(t, art)
	want, _ := os.ReadFile(trace.Dir(traceDir(root)).File(image))
	if !bytes.Equal(content, want) {
		t.Errorf("the artifact holds %q, want the trace file %q", content, want)
	}
	imgDigest, _ := img.Digest()
	if m.Subject == nil || m.Subject.Digest != imgDigest || m.Config.MediaType != types.OCIEmptyJSON ||
		m.ArtifactType != sharedtrace.ArtifactType || m.Annotations[sharedtrace.AnnotationCreated] == "" {
		t.Errorf("artifact manifest %+v", m)
	}
	p, ok := sharedtrace.NewFinder(sharedtrace.WithWait(20*time.Second)).Start(image, imgDigest.String()).Wait(context.Background())
	if !ok || strings.Join(p.Paths, ",") != "/usr/bin/app,/etc/app.conf" {
		t.Fatalf("a node found %v (%v)", p.Paths, ok)
	}
}

// TestTraceExportPushIndex: for an index, the trace refers to the manifest
// of the platform asked for.
func TestTraceExportPushIndex(t *testing.T) {
	reg := testenv.StartRegistry(t)
	image := reg.Ref("multi:v1")
	ref, err := name.ParseReference(image)
	if err != nil {
		t.Fatal(err)
	}
	var idx v1.ImageIndex = empty.Index
	digests := map[string]v1.Hash{}
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(64, 1)
		if err != nil {
			t.Fatal(err)
		}
		digests[arch], _ = img.Digest()
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	root := saveTrace(t, image, "/bin/sh")
	out, err := runCLI(t, "trace", "export", "--push", "--platform", "linux/arm64", "--root", root, image)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := readArtifact(t, ref.Context().Digest(strings.TrimSpace(out)))
	if m.Subject == nil || m.Subject.Digest != digests["arm64"] {
		t.Fatalf("subject %+v, want the arm64 manifest %s", m.Subject, digests["arm64"])
	}
	out, err = runCLI(t, "trace", "export", "--push", "--subject", digests["amd64"].String(), "--root", root, image)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := readArtifact(t, ref.Context().Digest(strings.TrimSpace(out))); m.Subject == nil || m.Subject.Digest != digests["amd64"] {
		t.Fatalf("--subject: subject %+v, want %s", m.Subject, digests["amd64"])
	}
}

func saveTrace(t *testing.T, image string, paths ...string) string {
	t.Helper()
	root := t.TempDir()
	r := trace.NewRecorder(image, 10)
	for _, p := range paths {
		r.Record(p)
	}
	if err := trace.Dir(traceDir(root)).Save(r); err != nil {
		t.Fatal(err)
	}
	return root
}

// readArtifact returns an artifact's manifest and its one layer's bytes.
func readArtifact(t *testing.T, d name.Digest) (*v1.Manifest, []byte) {
	t.Helper()
	desc, err := remote.Get(d)
	if err != nil {
		t.Fatal(err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil || len(m.Layers) != 1 {
		t.Fatalf("artifact manifest %s: %v", desc.Manifest, err)
	}
	l, err := remote.Layer(d.Context().Digest(m.Layers[0].Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return m, b
}
