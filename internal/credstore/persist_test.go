package credstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
)

// TestPersistWorkingOnly checks that a persisting store writes only the
// credentials of pulls that succeeded, 0600, and that a new store (a
// restarted fused) resolves them after Load.
func TestPersistWorkingOnly(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "credentials.json")
	s := New(WithPersistFile(file))
	good := authn.AuthConfig{Username: "u", Password: "good"}
	bad := authn.AuthConfig{Username: "u", Password: "bad"}
	set := func(repo string, cfg authn.AuthConfig) {
		t.Helper()
		if err := s.SetCredentials(ctx, "reg.example:5000", repo, cfg); err != nil {
			t.Fatal(err)
		}
	}
	set(PullRepository("team/app", "p1", StepPending), bad)
	set(PullRepository("team/app", "p1", StepFailed), authn.AuthConfig{})
	set(PullRepository("team/other", "p2", StepPending), bad) // still running at the "reboot"
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("credentials of pending and failed pulls were written: %v", err)
	}
	set(PullRepository("team/app", "p3", StepPending), good)
	set(PullRepository("team/app", "p3", StepSucceeded), good)
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("credentials file mode %v, want 0600", st.Mode().Perm())
	}

	restarted := New(WithPersistFile(file))
	n, err := restarted.Load()
	if err != nil || n != 1 {
		t.Fatalf("Load = %d, %v; want 1 repository", n, err)
	}
	if got := resolve(t, restarted, mustRepo(t, "reg.example:5000/team/app")); got != good {
		t.Errorf("after Load team/app resolves to %+v, want the working credentials", got)
	}
	if got := resolve(t, restarted, mustRepo(t, "reg.example:5000/team/other")); got != (authn.AuthConfig{}) {
		t.Errorf("after Load team/other resolves to %+v, want anonymous (its pull never succeeded)", got)
	}
}

// TestNoPersistFileWritesNothing checks the default: nothing on disk, and
// Load restores nothing.
func TestNoPersistFileWritesNothing(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	s := New()
	if err := s.SetCredentials(context.Background(), "reg.example", "team/app", authn.AuthConfig{Username: "u", Password: "p"}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Load(); n != 0 || err != nil {
		t.Errorf("Load without a file = %d, %v", n, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a store without a persist file wrote %v", entries)
	}
}

// TestLoadDamagedFile checks that a damaged file is a data-loss error that
// does not quote it.
func TestLoadDamagedFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "credentials.json")
	if err := os.WriteFile(file, []byte(`{"working": "s3cret`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(WithPersistFile(file)).Load()
	if !errdefs.IsDataLoss(err) {
		t.Fatalf("Load of a damaged file = %v, want errdefs.ErrDataLoss", err)
	}
	if err != nil && strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error quotes the file: %v", err)
	}
}
