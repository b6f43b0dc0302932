package mount

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root, as the shell tests do")
	}
}

func noWarn(t *testing.T) func(string) {
	return func(msg string) { t.Errorf("unexpected warning: %s", msg) }
}

// TestOpenRefuses: a symbolic link, a regular file and a non-empty
// directory at PATH are refused, and left as they were.
func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.Mkdir(target, 0o750)
	os.Symlink(target, filepath.Join(dir, "lnk"))
	os.WriteFile(filepath.Join(dir, "file"), []byte("x"), 0o600)
	os.Mkdir(filepath.Join(dir, "full"), 0o700)
	os.WriteFile(filepath.Join(dir, "full", "f"), []byte("x"), 0o600)
	for name, want := range map[string]string{"lnk": "symbolic link", "file": "not a directory", "full": "not empty"} {
		p, err := Open(filepath.Join(dir, name), "fuse.test", noWarn(t))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, want)
		}
		if p != nil {
			t.Errorf("%s: a Point with the error", name)
		}
	}
	if fi, err := os.Lstat(filepath.Join(dir, "lnk")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink was changed: %v %v", fi, err)
	}
	if es, _ := os.ReadDir(target); len(es) != 0 {
		t.Errorf("the symlink's target was changed: %v", es)
	}
}

// TestOpenLocks: a second Open of the same PATH is refused while the
// first holds it; Close removes a directory Open made.
func TestOpenLocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm")
	p, err := Open(path, "fuse.test", noWarn(t))
	if err != nil {
		t.Fatal(err)
	}
	if !p.Created {
		t.Error("Created is false for a PATH Open made")
	}
	if _, err := Open(path, "fuse.test", noWarn(t)); !errors.Is(err, ErrLive) {
		t.Errorf("second Open: %v, want ErrLive", err)
	}
	p.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left the directory it made: %v", err)
	}
	os.Mkdir(path, 0o700)
	p, err = Open(path, "fuse.test", noWarn(t))
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("Close removed a directory it did not make: %v", err)
	}
}

func serveEmpty(t *testing.T, srv **fuse.Server) func(string) error {
	return func(mountpoint string) error {
		s, err := fs.Mount(mountpoint, &fs.Inode{}, &fs.Options{MountOptions: fuse.MountOptions{Name: "test"}})
		*srv = s
		return err
	}
}

// TestMountLandsOnTheHeldDirectory: the directory checked is renamed away
// and PATH becomes a symlink to a victim between Open and Mount (what an
// attacker with write access to PATH's parent can do). Mount must refuse,
// and leave no mount anywhere: not on the victim, not on the renamed
// directory.
func TestMountLandsOnTheHeldDirectory(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	path, moved, victim := filepath.Join(dir, "vm"), filepath.Join(dir, "moved"), filepath.Join(dir, "victim")
	os.Mkdir(victim, 0o700)
	p, err := Open(path, "fuse.test", noWarn(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := os.Rename(path, moved); err != nil {
		t.Fatal(err)
	}
	os.Symlink(victim, path)
	var srv *fuse.Server
	m, err := p.Mount(Options{FsName: "test", Subtype: "test"}, serveEmpty(t, &srv))
	if err == nil || !strings.Contains(err.Error(), "undone") {
		t.Fatalf("Mount after the swap: %v (mount %v), want it refused and undone", err, m)
	}
	for _, where := range []string{victim, moved, path} {
		if fstype, ok := Type(where); ok {
			t.Errorf("%s is a mount point (%s) after a refused Mount", where, fstype)
		}
	}
}

// TestMountAndUnmount: a mount is known by its id, PATH shows it, Unmount
// removes it; a dead mount (its connection aborted, as when its daemon is
// killed) is detached by the next Open, with a warning.
func TestMountAndUnmount(t *testing.T) {
	needRoot(t)
	path := filepath.Join(t.TempDir(), "vm")
	p, err := Open(path, "fuse.test", noWarn(t))
	if err != nil {
		t.Fatal(err)
	}
	var srv *fuse.Server
	m, err := p.Mount(Options{FsName: "test", Subtype: "test"}, serveEmpty(t, &srv))
	if err != nil {
		t.Fatal(err)
	}
	if fstype, ok := Type(path); !ok || fstype != "fuse.test" || !mounted(t, m) {
		t.Fatalf("after Mount: %q %v, not Mounted", fstype, ok)
	}
	if _, err := m.Unmount(func(error) {}); err != nil {
		t.Fatal(err)
	}
	if mounted(t, m) {
		t.Fatal("still mounted after Unmount")
	}
	p.Close()

	// A dead mount: mounted, then its connection aborted.
	p, err = Open(path, "fuse.test", noWarn(t))
	if err != nil {
		t.Fatal(err)
	}
	m, err = p.Mount(Options{FsName: "test", Subtype: "test"}, serveEmpty(t, &srv))
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	abort := filepath.Join("/sys/fs/fuse/connections", strconv.Itoa(int(unix.Minor(st.Dev))), "abort")
	if _, err := os.Stat(abort); err != nil {
		// fusectl, where connections can be aborted, is not mounted
		// everywhere by default.
		if err := unix.Mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, ""); err != nil {
			t.Fatalf("mounting fusectl: %v", err)
		}
	}
	if err := os.WriteFile(abort, []byte("1"), 0o200); err != nil {
		unix.Unmount(path, unix.MNT_DETACH)
		t.Fatalf("aborting the connection: %v", err)
	}
	p.Close() // as a killed daemon's descriptors go
	warned := 0
	p, err = Open(path, "fuse.test", func(string) { warned++ })
	if err != nil {
		t.Fatalf("Open over a dead mount: %v", err)
	}
	defer p.Close()
	if still := mounted(t, m); warned != 1 || still {
		t.Errorf("dead mount: %d warnings, still mounted %v; want it detached with one warning", warned, still)
	}
}

// mounted is m.Mounted for a test, where the table must be readable.
func mounted(t *testing.T, m *Mount) bool {
	t.Helper()
	ok, err := m.Mounted()
	if err != nil {
		t.Fatal(err)
	}
	return ok
}
