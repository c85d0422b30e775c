package remote

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// contentRange is a parsed "Content-Range: bytes first-last/size" header;
// size is -1 when the server sent "*".
type contentRange struct {
	first, last, size int64
}

func parseContentRange(h string) (contentRange, error) {
	bad := func() (contentRange, error) {
		return contentRange{}, fmt.Errorf("%w: malformed Content-Range %q", errdefs.ErrFailedPrecondition, h)
	}
	spec, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return bad()
	}
	span, size, ok := strings.Cut(spec, "/")
	first, last, ok2 := strings.Cut(span, "-")
	if !ok || !ok2 {
		return bad()
	}
	cr := contentRange{size: -1}
	var err1, err2, err3 error
	cr.first, err1 = strconv.ParseInt(first, 10, 64)
	cr.last, err2 = strconv.ParseInt(last, 10, 64)
	if size != "*" {
		cr.size, err3 = strconv.ParseInt(size, 10, 64)
	}
	if err1 != nil || err2 != nil || err3 != nil || cr.first < 0 || cr.last < cr.first {
		return bad()
	}
	return cr, nil
}
