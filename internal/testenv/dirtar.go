package testenv

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
)

// tarDirGzip writes dir as a gzip layer tar to dst, turning overlayfs
// whiteouts (0/0 character devices, opaque-directory xattrs) into OCI ones
// (.wh.NAME, .wh..wh..opq), as a container builder does with an upper dir.
func tarDirGzip(dir, dst string) error {
	out, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("creating %s: %w", dst, err)
	}
	defer out.Close()
	zw := gzip.NewWriter(out)
	tw := tar.NewWriter(zw)
	links := map[uint64]string{} // inode to first path, for hard links
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		return writeDirEntry(tw, p, rel, links)
	})
	if err != nil {
		return fmt.Errorf("archiving %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("closing tar: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("closing gzip: %w", err)
	}
	return out.Close()
}

func writeDirEntry(tw *tar.Writer, p, rel string, links map[uint64]string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode()&fs.ModeCharDevice != 0 && st.Rdev == 0 {
		dirName, base := filepath.Split(rel)
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: dirName + ".wh." + base, ModTime: fixedTime()})
	}
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	hdr.Name, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = rel, int(st.Uid), int(st.Gid), "", ""
	if fi.IsDir() {
		hdr.Name += "/"
	}
	if fi.Mode().IsRegular() && st.Nlink > 1 {
		if first, ok := links[st.Ino]; ok {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
		} else {
			links[st.Ino] = rel
		}
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if fi.IsDir() && isOpaque(p) {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel + "/.wh..wh..opq", ModTime: fixedTime()})
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil
	}
	return copyFileInto(tw, p)
}

func isOpaque(dir string) bool {
	buf := make([]byte, 4)
	n, err := unix.Lgetxattr(dir, "trusted.overlay.opaque", buf)
	return err == nil && strings.HasPrefix(string(buf[:n]), "y")
}

func copyFileInto(w io.Writer, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}
