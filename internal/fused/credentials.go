package fused

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
)

// CredentialSetter is implemented by file systems that accept registry
// credentials at run time (POST /credentials). `lazysnap serve` receives
// them from the kubelet's pull requests (package criproxy) but fused is
// the process that fetches layers, so they travel over this socket. The
// implementation must keep them in memory only and never log them.
type CredentialSetter interface {
	SetCredentials(ctx context.Context, host, repository string, cfg authn.AuthConfig) error
}

// credentialsRequest is the body of POST /credentials. Repository may be
// empty (credentials for the whole host).
type credentialsRequest struct {
	Host       string           `json:"host"`
	Repository string           `json:"repository,omitempty"`
	Auth       authn.AuthConfig `json:"auth"`
}

// SetCredentials sends credentials for repository of the registry host to
// the server, which uses them for the layers it mounts from then on. It
// fails with errdefs.ErrNotImplemented when the server's file system takes
// no credentials.
func (c *Client) SetCredentials(ctx context.Context, host, repository string, cfg authn.AuthConfig) error {
	return c.post(ctx, "credentials", credentialsRequest{Host: host, Repository: repository, Auth: cfg})
}

// credentials handles POST /credentials. Error messages name the host at
// most: neither the body nor a decoding error (which may quote it) is
// echoed, since the body holds secrets.
func (s server) credentials(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.fsys.(CredentialSetter)
	if !ok {
		writeError(w, fmt.Errorf("credentials: %w", errdefs.ErrNotImplemented))
		return
	}
	var req credentialsRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, fmt.Errorf("decoding credentials request: %w", errdefs.ErrInvalidArgument))
		return
	}
	if req.Host == "" {
		writeError(w, fmt.Errorf("credentials: no host: %w", errdefs.ErrInvalidArgument))
		return
	}
	if err := cs.SetCredentials(r.Context(), req.Host, req.Repository, req.Auth); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
