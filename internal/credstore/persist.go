package credstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
)

// persistVersion is the format of the persisted file.
const persistVersion = 1

// persisted is the file WithPersistFile names: working credentials only,
// by "host/repository".
type persisted struct {
	Version int                         `json:"version"`
	Working map[string]authn.AuthConfig `json:"working"`
}

// WithPersistFile makes the store keep its working credentials (those a
// pull succeeded with; never pending ones) in the file at path as well as
// in memory: rewritten, mode 0600, whenever they change, and read back by
// Load. Meant for a file in a directory only root can enter: the file
// holds the secrets in clear, as the docker config does. The default is ""
// (memory only, nothing is ever written).
func WithPersistFile(path string) Option { return func(o *options) { o.persistFile = path } }

// Load reads the working credentials the persist file holds, if the store
// has one and the file exists, and returns how many repositories it
// restored. Credentials already in the store win. A file that cannot be
// decoded is an error wrapping errdefs.ErrDataLoss that never quotes it.
func (s *Store) Load() (int, error) {
	if s.opts.persistFile == "" {
		return 0, nil
	}
	b, err := os.ReadFile(s.opts.persistFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading persisted credentials: %w", err)
	}
	var p persisted
	if err := json.Unmarshal(b, &p); err != nil || p.Version != persistVersion {
		return 0, fmt.Errorf("persisted credentials %s are not in format %d: %w", s.opts.persistFile, persistVersion, errdefs.ErrDataLoss)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for key, cfg := range p.Working {
		if _, ok := s.working[key]; !ok {
			// authn.AuthConfig's JSON form adds the auth field; the store
			// keeps user and password only, as normalize leaves them.
			if cfg.Username != "" || cfg.Password != "" {
				cfg.Auth = ""
			}
			s.working[key] = cfg
			n++
		}
	}
	return n, nil
}

// persist writes the working credentials to the persist file, atomically
// (a crash leaves the old file or the new one); s.mu must be held.
func (s *Store) persist() error {
	if s.opts.persistFile == "" {
		return nil
	}
	b, err := json.Marshal(persisted{Version: persistVersion, Working: s.working})
	if err != nil {
		return fmt.Errorf("encoding credentials: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.opts.persistFile), ".credentials-*")
	if err != nil {
		return fmt.Errorf("persisting credentials: %w", err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes the file 0600 whatever the umask; Chmod says so.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("persisting credentials: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("persisting credentials: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("persisting credentials: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("persisting credentials: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.opts.persistFile); err != nil {
		return fmt.Errorf("persisting credentials: %w", err)
	}
	return nil
}
