package fs

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	"github.com/lazysnap/lazysnap/fs/layer"
	"github.com/lazysnap/lazysnap/fs/remote"
	"github.com/opencontainers/go-digest"
)

// readTOC reads the layer's TOC with layer.ReadTOC and reports a TOC that
// does not match its digest as errdefs.ErrDataLoss, the category of every
// other verification failure, so that the snapshotter counts the fallback
// as "verification" rather than "mount-error".
//
// layer.ReadTOC refuses a mismatching TOC with ErrFailedPrecondition, but
// the registry's own refusals (a Content-Range that does not fit) are
// FailedPrecondition too and come through the blob; marking the blob's
// errors tells the two apart. An error that already is DataLoss is left as
// it is.
func readTOC(ctx context.Context, blob remote.Blob, tocDigest digest.Digest) (*layer.TOC, error) {
	toc, err := layer.ReadTOC(ctx, markedBlob{blob}, tocDigest)
	var fromBlob *blobError
	if err != nil && errdefs.IsFailedPrecondition(err) && !errdefs.IsDataLoss(err) && !errors.As(err, &fromBlob) {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrDataLoss)
	}
	return toc, err
}

// blobError marks an error that came from fetching the blob.
type blobError struct{ err error }

func (e *blobError) Error() string { return e.err.Error() }
func (e *blobError) Unwrap() error { return e.err }

func markBlobError(err error) error {
	if err == nil || err == io.EOF {
		return err // io.EOF is compared with ==, and is no failure
	}
	return &blobError{err}
}

// markedBlob is a Blob whose errors are marked as the blob's. The TOC
// keeps it for the layer's later fetches, so it names its source as the
// wrapped blob does (fs/layer's errors say which registry failed).
type markedBlob struct{ remote.Blob }

func (b markedBlob) String() string {
	if s, ok := b.Blob.(fmt.Stringer); ok {
		return s.String()
	}
	return "blob " + b.Digest().String()
}

func (b markedBlob) Fetch(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	rc, err := b.Blob.Fetch(ctx, off, n)
	if err != nil {
		return nil, markBlobError(err)
	}
	return markedReader{rc}, nil
}

type markedReader struct{ io.ReadCloser }

func (r markedReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	return n, markBlobError(err)
}
