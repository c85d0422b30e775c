package fused

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/containerd/errdefs"
)

// errorBody is the JSON body of every failed request. Kind names the
// errdefs category so the client can rebuild an error that errdefs.IsXxx
// recognises; the HTTP status is only a coarse hint for humans with curl.
type errorBody struct {
	Error string `json:"error"`
	Kind  string `json:"kind"`
}

type errorKind struct {
	name     string
	sentinel error
	is       func(error) bool
	status   int
}

// errorKinds is ordered: the first match names an error. Data loss comes
// first because it is the most specific: a verification failure may also
// carry another category (a TOC digest mismatch is FailedPrecondition as
// well) and must still reach the snapshotter as one, which counts it as a
// "verification" fallback. Data loss and deadlines have no HTTP status of
// their own, which is why the kind travels in the body. (A function, not a
// package variable, so nothing can change the table.)
func errorKinds() []errorKind {
	return []errorKind{
		{"data-loss", errdefs.ErrDataLoss, errdefs.IsDataLoss, http.StatusInternalServerError},
		{"not-found", errdefs.ErrNotFound, errdefs.IsNotFound, http.StatusNotFound},
		{"already-exists", errdefs.ErrAlreadyExists, errdefs.IsAlreadyExists, http.StatusConflict},
		{"invalid-argument", errdefs.ErrInvalidArgument, errdefs.IsInvalidArgument, http.StatusBadRequest},
		{"failed-precondition", errdefs.ErrFailedPrecondition, errdefs.IsFailedPrecondition, http.StatusPreconditionFailed},
		{"not-implemented", errdefs.ErrNotImplemented, errdefs.IsNotImplemented, http.StatusNotImplemented},
		{"unavailable", errdefs.ErrUnavailable, errdefs.IsUnavailable, http.StatusServiceUnavailable},
		{"deadline-exceeded", context.DeadlineExceeded, errdefs.IsDeadlineExceeded, http.StatusGatewayTimeout},
		{"canceled", context.Canceled, errdefs.IsCanceled, http.StatusServiceUnavailable},
		{"permission-denied", errdefs.ErrPermissionDenied, errdefs.IsPermissionDenied, http.StatusForbidden},
		{"resource-exhausted", errdefs.ErrResourceExhausted, errdefs.IsResourceExhausted, http.StatusTooManyRequests},
	}
}

// encodeError names err's category and picks a status for it.
func encodeError(err error) (errorBody, int) {
	for _, k := range errorKinds() {
		if k.is(err) {
			return errorBody{Error: err.Error(), Kind: k.name}, k.status
		}
	}
	return errorBody{Error: err.Error(), Kind: "unknown"}, http.StatusInternalServerError
}

// decodeError rebuilds an error of the same category on the client side.
func decodeError(op string, b errorBody, status int) error {
	for _, k := range errorKinds() {
		if k.name == b.Kind {
			return fmt.Errorf("fused %s: %s: %w", op, b.Error, k.sentinel)
		}
	}
	if b.Error == "" {
		b.Error = http.StatusText(status)
	}
	return fmt.Errorf("fused %s: %w", op, errors.New(b.Error))
}
