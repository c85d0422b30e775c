package main

import (
	"fmt"
	"os"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/spf13/cobra"

	"github.com/lazysnap/lazysnap/fs/sharedtrace"
	"github.com/lazysnap/lazysnap/fs/trace"
)

// pushFlags are `trace export`'s flags for --push.
type pushFlags struct {
	push      bool
	platform  string
	subject   string
	plainHTTP bool
}

func (f *pushFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.push, "push", false, "push the trace to IMAGE's repository instead of writing it")
	fl.StringVar(&f.platform, "platform", "", "with --push and an index: the manifest of this platform (default this node's)")
	fl.StringVar(&f.subject, "subject", "", "with --push: the digest of the manifest the trace refers to (default IMAGE's)")
	fl.BoolVar(&f.plainHTTP, "plain-http", false, "with --push: talk plain HTTP to the registry")
}

// pushTrace pushes image's saved trace file, byte for byte, as an artifact
// referring to image's manifest, and prints the artifact's digest.
func pushTrace(cmd *cobra.Command, dir, image string, p trace.Parsed, f pushFlags) error {
	if len(p.Paths) == 0 || len(p.Warnings) > 0 {
		// Other nodes ignore a trace with bad lines whole: push a clean one.
		return fmt.Errorf("not pushing the trace of %s: it is empty or damaged: %w", image, errdefs.ErrFailedPrecondition)
	}
	content, err := os.ReadFile(trace.Dir(dir).File(image))
	if err != nil {
		return fmt.Errorf("reading the trace of %s: %w", image, err)
	}
	var nopts []name.Option
	if f.plainHTTP {
		nopts = append(nopts, name.Insecure)
	}
	ref, err := name.ParseReference(image, nopts...)
	if err != nil {
		return fmt.Errorf("image %q: %v: %w", image, err, errdefs.ErrInvalidArgument)
	}
	ropts := []remote.Option{remote.WithContext(cmd.Context()), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	subj, err := pushSubject(ref, f, ropts)
	if err != nil {
		return err
	}
	h, err := sharedtrace.Push(cmd.Context(), ref.Context(), subj, content, time.Now(), ropts...)
	if err != nil {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), h)
	return nil
}

// pushSubject is the manifest descriptor the trace is to refer to.
func pushSubject(ref name.Reference, f pushFlags, ropts []remote.Option) (v1.Descriptor, error) {
	if f.subject != "" {
		if _, err := v1.NewHash(f.subject); err != nil {
			return v1.Descriptor{}, fmt.Errorf("--subject %q: %v: %w", f.subject, err, errdefs.ErrInvalidArgument)
		}
		ref = ref.Context().Digest(f.subject)
	}
	var platform *v1.Platform
	if f.platform != "" {
		p, err := v1.ParsePlatform(f.platform)
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("--platform %q: %v: %w", f.platform, err, errdefs.ErrInvalidArgument)
		}
		platform = p
	}
	return sharedtrace.Subject(ref, platform, ropts...)
}
