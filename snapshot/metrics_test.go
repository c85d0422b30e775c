package snapshot

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/containerd/errdefs"
)

// TestFallbackReasonCategories: each errdefs category a FileSystem reports
// maps to the reason docs/config.md documents. fs/fallback_test.go checks
// the same with the real FS, in-process and through fused.
func TestFallbackReasonCategories(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errNoFileSystem, ReasonNoFileSystem},
		{fmt.Errorf("no TOC: %w", errdefs.ErrInvalidArgument), ReasonUnsupported},
		{fmt.Errorf("no TOC: %w", errdefs.ErrNotImplemented), ReasonUnsupported},
		{fmt.Errorf("chunk: %w", errdefs.ErrDataLoss), ReasonVerification},
		{fmt.Errorf("TOC digest: %w: %w", errdefs.ErrFailedPrecondition, errdefs.ErrDataLoss), ReasonVerification},
		{fmt.Errorf("TOC digest: %w: %w", errdefs.ErrInvalidArgument, errdefs.ErrDataLoss), ReasonVerification},
		{fmt.Errorf("registry: %w", errdefs.ErrUnavailable), ReasonUnreachable},
		{fmt.Errorf("slow: %w", context.DeadlineExceeded), ReasonUnreachable},
		{errors.New("boom"), ReasonOther},
	} {
		if got := fallbackReason(tc.err); got != tc.want {
			t.Errorf("fallbackReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
