// Command soci-peer runs the SOCI snapshotter (awslabs/soci-snapshotter)
// for `make bench`, from its published packages: the Go module proxy serves
// its main module but not its cmd module (soci-snapshotter-grpc, soci).
//
//	soci-peer serve   --address SOCK --root DIR --config TOML
//	soci-peer convert --address CONTAINERD --namespace NS --src REF --out TAR
//
// serve does what upstream's soci-snapshotter-grpc does for a bench node:
// service.NewSociSnapshotterService behind containerd's snapshots gRPC
// service on a unix socket, until SIGINT or SIGTERM. convert does what
// `soci convert` does: builds the SOCI index (v2) of an image already in
// containerd and bundles it with the image in a new OCI index, exported as
// an OCI archive for the caller to push.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/awslabs/soci-snapshotter/config"
	socifs "github.com/awslabs/soci-snapshotter/fs"
	"github.com/awslabs/soci-snapshotter/metadata"
	"github.com/awslabs/soci-snapshotter/service"
	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/awslabs/soci-snapshotter/ztoc"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: soci-peer serve|convert [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "convert":
		err = convert(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "soci-peer %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	address := fs.String("address", "/run/soci-snapshotter-grpc/soci-snapshotter-grpc.sock", "gRPC socket")
	root := fs.String("root", "/var/lib/soci-snapshotter-grpc", "root directory")
	cfgPath := fs.String("config", config.DefaultConfigPath, "TOML configuration file")
	level := fs.String("log-level", "info", "logging level")
	_ = fs.Parse(args)
	if err := log.SetLevel(*level); err != nil {
		return fmt.Errorf("setting log level: %w", err)
	}
	ctx := log.WithLogger(context.Background(), log.L)
	cfg, err := config.NewConfigFromToml(*cfgPath)
	if err != nil {
		return err
	}
	store, closeStore, err := metadataStore(*root)
	if err != nil {
		return err
	}
	defer closeStore()
	sn, err := service.NewSociSnapshotterService(ctx, *root, &cfg.ServiceConfig,
		service.WithFilesystemOptions(socifs.WithMetadataStore(store)))
	if err != nil {
		return fmt.Errorf("creating the snapshotter: %w", err)
	}
	// Close unmounts the layers this daemon mounted.
	defer sn.Close()
	l, err := listen(*address)
	if err != nil {
		return err
	}
	rpc := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(sn))
	served := make(chan error, 1)
	go func() { served <- rpc.Serve(l) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	case <-sig:
		rpc.Stop()
		return nil
	}
}

// metadataStore is upstream's default metadata store ("db"): one bbolt
// database in the root holding every layer's file metadata. The service
// leaves it to the daemon's main, and the filesystem needs it.
func metadataStore(root string) (metadata.Store, func() error, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, nil, fmt.Errorf("creating %s: %w", root, err)
	}
	db, err := bolt.Open(filepath.Join(root, "metadata.db"), 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		return nil, nil, fmt.Errorf("opening the metadata database: %w", err)
	}
	store := func(sr *io.SectionReader, toc ztoc.TOC, opts ...metadata.Option) (metadata.Reader, error) {
		return metadata.NewReader(db, sr, toc, opts...)
	}
	return store, db.Close, nil
}

// listen removes a stale socket first, or the listen would fail.
func listen(address string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(address), 0o700); err != nil {
		return nil, fmt.Errorf("creating socket dir: %w", err)
	}
	if err := os.Remove(address); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket: %w", err)
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", address, err)
	}
	return l, nil
}

func convert(args []string) error {
	fs := flag.NewFlagSet("convert", flag.ExitOnError)
	address := fs.String("address", "/run/containerd/containerd.sock", "containerd socket")
	ns := fs.String("namespace", "default", "containerd namespace")
	src := fs.String("src", "", "the image to convert, already in containerd")
	out := fs.String("out", "", "where to write the converted image as an OCI archive (tar)")
	dbDir := fs.String("db-dir", "", "directory for SOCI's artifacts database (a fresh temporary one if empty)")
	_ = fs.Parse(args)
	if *src == "" || *out == "" {
		return errors.New("need -src and -out")
	}
	client, err := containerd.New(*address)
	if err != nil {
		return fmt.Errorf("connecting to containerd: %w", err)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), *ns)
	ctx, done, err := client.WithLease(ctx)
	if err != nil {
		return fmt.Errorf("taking a lease: %w", err)
	}
	defer done(ctx)
	dst := *src + "-soci"
	if err := buildIndex(ctx, client, *address, *src, dst, *dbDir); err != nil {
		return err
	}
	return export(ctx, client, dst, *out)
}

// buildIndex converts src into dst as `soci convert` does, with upstream's
// defaults (span size, minimum layer size), the blobs in containerd's
// content store.
func buildIndex(ctx context.Context, client *containerd.Client, address, src, dst, dbDir string) error {
	if dbDir == "" {
		d, err := os.MkdirTemp("", "soci-peer-db-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dbDir = d
	}
	db, err := soci.NewDB(soci.ArtifactsDbPath(dbDir))
	if err != nil {
		return fmt.Errorf("opening the artifacts database: %w", err)
	}
	blobStore, err := store.NewContentStore(store.WithType(store.ContainerdContentStoreType),
		store.WithContainerdAddress(address))
	if err != nil {
		return fmt.Errorf("opening the content store: %w", err)
	}
	img, err := client.ImageService().Get(ctx, src)
	if err != nil {
		return fmt.Errorf("getting %s: %w", src, err)
	}
	builder, err := soci.NewIndexBuilder(client.ContentStore(), blobStore, soci.WithArtifactsDb(db))
	if err != nil {
		return fmt.Errorf("creating the index builder: %w", err)
	}
	desc, err := builder.Convert(ctx, img)
	if err != nil {
		return fmt.Errorf("converting %s: %w", src, err)
	}
	is := client.ImageService()
	converted := images.Image{Name: dst, Target: *desc}
	if _, err := is.Create(ctx, converted); errdefs.IsAlreadyExists(err) {
		_, err = is.Update(ctx, converted)
		return err
	} else if err != nil {
		return fmt.Errorf("creating image %s: %w", dst, err)
	}
	return nil
}

// export writes dst, every platform and artifact of its index (the SOCI
// index and its zTOCs among them), as an OCI archive.
func export(ctx context.Context, client *containerd.Client, dst, out string) error {
	w, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("creating %s: %w", out, err)
	}
	err = client.Export(ctx, w, archive.WithImage(client.ImageService(), dst), archive.WithAllPlatforms())
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("exporting %s: %w", dst, err)
	}
	return nil
}
