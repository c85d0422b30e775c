// Package criproxy is a CRI image service that forwards every call to
// containerd's, recording on the way the registry credentials of each
// PullImage request.
//
// containerd passes the kubelet's pull credentials to its own resolver but
// not to snapshotters, so a remote snapshotter mounting a layer of a private
// image has none. A kubelet pointed at this proxy (--image-service-endpoint)
// sends its pulls through lazysnap, which hands the credentials to the
// process that fetches layers before containerd starts unpacking (that is,
// before the snapshotter's Prepare and Mount need them), as pending for that
// pull, and confirms them once the pull succeeded. Only the image
// service is proxied: the kubelet's runtime endpoint stays containerd's.
package criproxy

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/lazysnap/lazysnap/internal/credstore"
)

// CredentialSink receives the credentials of a pull. host is the registry
// as go-containerregistry names it ("index.docker.io" for Docker Hub),
// repository the image's repository ("library/nginx") with the pull's step
// (see credstore.PullRepository): pending before the pull, succeeded or
// failed after it. fused.Client and credstore.Store implement it.
type CredentialSink interface {
	SetCredentials(ctx context.Context, host, repository string, cfg authn.AuthConfig) error
}

// Option configures a Proxy.
type Option func(*options)

type options struct {
	sink       CredentialSink
	logger     *slog.Logger
	maxMsgSize int
}

// defaultOptions holds every default in one place.
func defaultOptions() options {
	return options{
		sink:       nil,            // The default records nothing.
		logger:     slog.Default(), // The default is slog.Default().
		maxMsgSize: 16 << 20,       // The default is 16 MiB, the kubelet's own limit.
	}
}

// WithCredentialSink sets where the credentials of pulls go. The default is
// nil: pulls are forwarded and their credentials recorded nowhere.
func WithCredentialSink(s CredentialSink) Option { return func(o *options) { o.sink = s } }

// WithLogger sets the logger. It never receives credentials. The default is
// slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithMaxMessageSize bounds the messages received from containerd (a
// ListImages answer on a node with many images is large). The default is
// 16 MiB, the limit the kubelet uses.
func WithMaxMessageSize(n int) Option { return func(o *options) { o.maxMsgSize = n } }

// Proxy implements runtimeapi.ImageServiceServer by forwarding to
// containerd. Upstream errors are returned unchanged: they already are gRPC
// statuses, and the kubelet must see containerd's codes.
type Proxy struct {
	runtimeapi.UnimplementedImageServiceServer

	opts     options
	conn     *grpc.ClientConn
	upstream runtimeapi.ImageServiceClient
}

// New returns a Proxy forwarding to the CRI image service on the unix
// socket containerdAddress ("/run/containerd/containerd.sock", with or
// without "unix://"). It connects lazily, so containerd may start later.
func New(containerdAddress string, opts ...Option) (*Proxy, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if containerdAddress == "" {
		return nil, fmt.Errorf("cri image service: no containerd address: %w", errdefs.ErrInvalidArgument)
	}
	target := "unix://" + strings.TrimPrefix(containerdAddress, "unix://")
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.maxMsgSize)))
	if err != nil {
		return nil, fmt.Errorf("cri image service: connecting to %s: %v: %w", target, err, errdefs.ErrInvalidArgument)
	}
	return &Proxy{opts: o, conn: conn, upstream: runtimeapi.NewImageServiceClient(conn)}, nil
}

// Close closes the connection to containerd.
func (p *Proxy) Close() error { return p.conn.Close() }

// Serve serves the image service on l until ctx is done. It then stops at
// once, cancelling pulls in flight: the kubelet retries them, whereas
// waiting for a large pull would hold up a restart of lazysnap for minutes.
func (p *Proxy) Serve(ctx context.Context, l net.Listener) error {
	srv := grpc.NewServer(grpc.MaxSendMsgSize(p.opts.maxMsgSize))
	runtimeapi.RegisterImageServiceServer(srv, p)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		srv.Stop()
		<-served
		return nil
	case err := <-served:
		return fmt.Errorf("cri image service: %w", err)
	}
}

// PullImage forwards the request, with its credentials registered as
// pending for the pull's repository while it runs: containerd mounts the
// layers through the snapshotter during the pull, so they must be usable
// by then. They become the repository's working credentials only when
// containerd's pull succeeded, and are discarded when it failed, so a pod
// with a wrong pull secret never replaces credentials that work.
func (p *Proxy) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	pc := p.pending(ctx, req)
	resp, err := p.upstream.PullImage(ctx, req)
	if pc != nil {
		// The outcome must arrive even when the kubelet gave up on the
		// pull: a pending entry otherwise lingers until it times out.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), outcomeTimeout)
		defer cancel()
		pc.finish(fctx, err == nil)
	}
	return resp, err
}

// outcomeTimeout bounds sending a pull's outcome to the sink.
const outcomeTimeout = 30 * time.Second

// pullCredentials are the credentials of one pull in flight.
type pullCredentials struct {
	p                *Proxy
	image            string
	host, repository string
	pull             string
	cfg              authn.AuthConfig
}

// pending registers the pull's credentials as pending and returns them, or
// nil when there are none or they could not be registered. A failure does
// not fail the pull: containerd has the credentials too, so the layers that
// cannot be mounted lazily are pulled normally.
func (p *Proxy) pending(ctx context.Context, req *runtimeapi.PullImageRequest) *pullCredentials {
	cfg := authConfig(req.GetAuth())
	if p.opts.sink == nil || cfg == (authn.AuthConfig{}) {
		return nil
	}
	image := req.GetImage().GetImage()
	ref, err := name.ParseReference(image)
	if err != nil {
		p.opts.logger.WarnContext(ctx, "pull credentials not recorded: bad image reference", "image", image, "error", err)
		return nil
	}
	repo := ref.Context()
	pc := &pullCredentials{p: p, image: image, host: repo.RegistryStr(), repository: repo.RepositoryStr(),
		pull: rand.Text(), cfg: cfg}
	if err := pc.send(ctx, credstore.StepPending, cfg); err != nil {
		p.opts.logger.WarnContext(ctx, "pull credentials not recorded; layers of this image may be pulled normally",
			"image", image, "error", err)
	}
	return pc
}

// finish promotes the credentials when the pull succeeded and discards
// them otherwise.
func (pc *pullCredentials) finish(ctx context.Context, succeeded bool) {
	step, cfg := credstore.StepFailed, authn.AuthConfig{}
	if succeeded {
		step, cfg = credstore.StepSucceeded, pc.cfg
	}
	if err := pc.send(ctx, step, cfg); err != nil {
		pc.p.opts.logger.WarnContext(ctx, "outcome of a pull's credentials not recorded", "image", pc.image,
			"step", step, "error", err)
	}
}

func (pc *pullCredentials) send(ctx context.Context, step credstore.Step, cfg authn.AuthConfig) error {
	repo := credstore.PullRepository(pc.repository, pc.pull, step)
	return pc.p.opts.sink.SetCredentials(ctx, pc.host, repo, cfg)
}

// authConfig converts CRI's AuthConfig. ServerAddress is dropped: the
// image reference names the registry.
func authConfig(a *runtimeapi.AuthConfig) authn.AuthConfig {
	return authn.AuthConfig{
		Username:      a.GetUsername(),
		Password:      a.GetPassword(),
		Auth:          a.GetAuth(),
		IdentityToken: a.GetIdentityToken(),
		RegistryToken: a.GetRegistryToken(),
	}
}

// ListImages forwards to containerd.
func (p *Proxy) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	return p.upstream.ListImages(ctx, req)
}

// ImageStatus forwards to containerd.
func (p *Proxy) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	return p.upstream.ImageStatus(ctx, req)
}

// RemoveImage forwards to containerd.
func (p *Proxy) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	return p.upstream.RemoveImage(ctx, req)
}

// ImageFsInfo forwards to containerd.
func (p *Proxy) ImageFsInfo(ctx context.Context, req *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	return p.upstream.ImageFsInfo(ctx, req)
}

// StreamImages relays containerd's stream (an Unimplemented status from a
// containerd without it passes through, and the kubelet falls back to
// ListImages).
func (p *Proxy) StreamImages(req *runtimeapi.StreamImagesRequest, out grpc.ServerStreamingServer[runtimeapi.StreamImagesResponse]) error {
	in, err := p.upstream.StreamImages(out.Context(), req)
	if err != nil {
		return err
	}
	for {
		msg, err := in.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := out.Send(msg); err != nil {
			return err
		}
	}
}
