package install

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// writeFileAtomic writes data to path through a temporary file in the same
// directory and a rename, so containerd or systemd never read half a file
// and a crash leaves either the old or the new content.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// writeFileIfDifferent writes data unless path already holds exactly data
// with mode perm, and reports whether it wrote. Skipping identical content
// is what makes a second install change nothing.
func writeFileIfDifferent(path string, data []byte, perm fs.FileMode) (bool, error) {
	if st, err := os.Stat(path); err == nil && st.Mode().Perm() == perm {
		cur, err := os.ReadFile(path)
		if err == nil && bytes.Equal(cur, data) {
			return false, nil
		}
	}
	return true, writeFileAtomic(path, data, perm)
}

// writeFileIfAbsent writes data only if nothing exists at path yet, so an
// operator's edits to lazysnap's own config survive reinstalls.
func writeFileIfAbsent(path string, data []byte, perm fs.FileMode) (bool, error) {
	if _, err := os.Lstat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("checking %s: %w", path, err)
	}
	return true, writeFileAtomic(path, data, perm)
}

// removeIfExists removes path (a file, or a directory tree when all is set)
// and reports whether there was something to remove.
func removeIfExists(path string, all bool) (bool, error) {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	remove := os.Remove
	if all {
		remove = os.RemoveAll
	}
	if err := remove(path); err != nil {
		return false, fmt.Errorf("removing %s: %w", path, err)
	}
	return true, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
