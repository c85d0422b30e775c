package bench

import "time"

// Result is one measured case: one workload in one mode, from a cold node.
type Result struct {
	Workload string `json:"workload"`
	Mode     Mode   `json:"mode"`
	Rep      int    `json:"rep"`
	// Started is when the pull started (the clock's zero), so a case can be
	// lined up with a profile or a log of the node taken at the same time.
	Started time.Time `json:"started"`
	// PullSeconds is pull start to pull done (`lazysnap pull`, unpacking).
	PullSeconds float64 `json:"pull_seconds"`
	// CreateSeconds is container and task creation (snapshot prepare,
	// rootfs mount, runc create).
	CreateSeconds float64 `json:"create_seconds"`
	// RunSeconds is task start to the ready signal.
	RunSeconds float64 `json:"run_seconds"`
	// ReadySeconds is pull start to the ready signal: the sum of the three.
	ReadySeconds float64 `json:"ready_seconds"`
	// BytesAtReady and RequestsAtReady are the blob bytes and blob GETs the
	// registry served from pull start to ready.
	BytesAtReady    int64 `json:"bytes_at_ready"`
	RequestsAtReady int64 `json:"requests_at_ready"`
	// BytesTotal and RequestsTotal also count what was fetched after ready
	// (background fetch), until the registry was quiet for a while.
	BytesTotal    int64 `json:"bytes_total"`
	RequestsTotal int64 `json:"requests_total"`
	// TotalSettled is false when the wait for quiet hit its cap: the totals
	// are then a lower bound.
	TotalSettled bool `json:"total_settled"`
	// Requests are the blob GETs, in arrival order, with WithRequestLog.
	Requests []Request `json:"requests,omitempty"`
}

// Request is one blob GET of a case, its times in seconds from pull start.
type Request struct {
	Blob  string  `json:"blob"` // the digest's first 12 hex digits
	Range string  `json:"range,omitempty"`
	Start float64 `json:"start"`
	End   float64 `json:"end"` // 0: still being served when the case ended
	Bytes int64   `json:"bytes"`
}
