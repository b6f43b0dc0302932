// Package tree reads and drives a live multifs control directory from the
// outside: the client side of package fsys, for programs that are not the
// daemon (multifs handoff; tests and scripts could use it too).
//
// A program that runs as root and acts on a path in a shared directory
// (/tmp/vm1) must act on what it checked, not on whatever the path names a
// moment later. So Open takes PATH once, without following a symlink at
// it, proves that the directory it holds is the root of a live multifs
// mount, and every later read and write goes through that descriptor:
//
//   - fstatfs(2) on it says FUSE;
//   - statx(2) says it is the root of its mount, and that mount's line in
//     /proc/self/mountinfo, found by the mount id, has type fuse.multifs
//     (what the daemon mounts, itself or through fusermount3 or
//     mount.fuse3);
//   - its stats file parses and carries the keys every multifs root stats
//     has (links, links_total, host).
//
// Files below it are opened with openat2(2) confined to the mount (no
// symlink, no magic link, no other mount, nothing above it), or component
// by component with O_NOFOLLOW where openat2 is missing. Reads are bounded
// (MaxStats): a stats file is a few hundred bytes, anything much larger is
// not one.
//
// Once the daemon is gone, every call fails (ENOTCONN) rather than reading
// whatever a later mount on the same path would show.
package tree

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"multifs/fsys/mount"
)

// FSType is the mount type multifs's mounts have.
const FSType = "fuse.multifs"

// MaxStats bounds what is read of one stats file, and MaxLines its lines.
const (
	MaxStats = 16 << 10
	MaxLines = 256
)

// ErrNoLink means the link is not open (never was, or closed).
var ErrNoLink = errors.New("no such link")

// rootKeys are in every multifs root stats file.
var rootKeys = []string{"links", "links_total", "host"}

// Tree is a multifs control directory held open.
type Tree struct {
	Path string
	fd   int // the mount's root, O_RDONLY|O_DIRECTORY
}

// Open takes the multifs mounted at path (its mountpoint, not a symlink to
// it) and proves it is one; see the package doc. The error says what is
// wrong in a few words, without the path.
func Open(path string) (*Tree, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOTDIR || err == unix.ELOOP {
		// O_DIRECTORY|O_NOFOLLOW on a symlink says ENOTDIR: which was it?
		var st unix.Stat_t
		if unix.Lstat(path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			err = unix.ELOOP
		}
	}
	switch {
	case err == unix.ELOOP:
		return nil, errors.New("a symbolic link (give the mountpoint itself)")
	case err == unix.ENOTDIR:
		return nil, errors.New("not a directory")
	case err == unix.ENOTCONN:
		return nil, errors.New("a FUSE mount whose daemon is gone")
	case err != nil:
		return nil, err
	}
	t := &Tree{Path: path, fd: fd}
	if err := t.prove(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return t, nil
}

// Close releases the descriptor.
func (t *Tree) Close() error {
	if t.fd < 0 {
		return nil
	}
	err := unix.Close(t.fd)
	t.fd = -1
	return err
}

func (t *Tree) prove() error {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(t.fd, &sfs); err != nil {
		return fmt.Errorf("statfs: %w", err)
	}
	if uint32(sfs.Type) != unix.FUSE_SUPER_MAGIC {
		return errors.New("not a multifs mount (not FUSE)")
	}
	var sx unix.Statx_t
	if err := unix.Statx(t.fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID, &sx); err != nil {
		return fmt.Errorf("statx: %w", err)
	}
	if sx.Mask&unix.STATX_MNT_ID == 0 {
		return errors.New("statx gives no mount id (kernel too old)")
	}
	if sx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && sx.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return errors.New("not a multifs mountpoint (a directory inside a FUSE mount)")
	}
	fstype, found, err := mount.TypeOf(sx.Mnt_id)
	if err != nil {
		return fmt.Errorf("mountinfo: %w", err)
	}
	if !found {
		return errors.New("its mount is not in /proc/self/mountinfo")
	}
	if fstype != FSType {
		return fmt.Errorf("not a multifs mount (a %s mount)", fstype)
	}
	st, err := t.Root()
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	for _, k := range rootKeys {
		if _, ok := st[k]; !ok {
			return fmt.Errorf("stats has no %q: not a multifs root", k)
		}
	}
	return nil
}

// Stats is one stats file: key to value.
type Stats map[string]string

// Uint is the value of key as a number; false if absent or not one.
func (s Stats) Uint(key string) (uint64, bool) {
	v, ok := s[key]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil
}

// Parse reads the "key: value" lines of a stats file. Keys are lower-case
// words (a-z, 0-9, _); a line that is not one, or more than MaxLines, is
// an error: the text is then not what multifs writes.
func Parse(text []byte) (Stats, error) {
	s := Stats{}
	lines := strings.Split(strings.TrimSuffix(string(text), "\n"), "\n")
	if len(lines) > MaxLines {
		return nil, fmt.Errorf("%d lines, more than %d", len(lines), MaxLines)
	}
	for i, line := range lines {
		if line == "" && len(lines) == 1 {
			break // empty file
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || !isKey(k) {
			return nil, fmt.Errorf("line %d is not \"key: value\"", i+1)
		}
		s[k] = strings.TrimPrefix(v, " ")
	}
	return s, nil
}

func isKey(k string) bool {
	if k == "" || len(k) > 64 {
		return false
	}
	for _, c := range []byte(k) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// Root reads PATH/stats.
func (t *Tree) Root() (Stats, error) { return t.stats("stats") }

// Link reads PATH/links/ID/stats; ErrNoLink if the link is not open.
func (t *Tree) Link(id uint64) (Stats, error) {
	st, err := t.stats(linkFile(id, "stats"))
	if errors.Is(err, unix.ENOENT) {
		return nil, ErrNoLink
	}
	return st, err
}

// Links lists the open links' ids, ascending.
func (t *Tree) Links() ([]uint64, error) {
	fd, err := t.openat("links", unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "links")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	ids := make([]uint64, 0, len(names))
	for _, n := range names {
		if id, err := strconv.ParseUint(n, 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

// CloseLink writes "1" to PATH/links/ID/close: the daemon closes the link
// before the write returns, for good. ErrNoLink if it is not open.
func (t *Tree) CloseLink(id uint64) error {
	fd, err := t.openat(linkFile(id, "close"), unix.O_WRONLY)
	if errors.Is(err, unix.ENOENT) {
		return ErrNoLink
	}
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), "close")
	_, werr := f.Write([]byte("1\n"))
	cerr := f.Close()
	if errors.Is(werr, unix.ENOENT) {
		return ErrNoLink // it went between the open and the write
	}
	if werr != nil {
		return werr
	}
	return cerr
}

func linkFile(id uint64, name string) string {
	return "links/" + strconv.FormatUint(id, 10) + "/" + name
}

// stats reads and parses one stats file, at most MaxStats bytes of it.
func (t *Tree) stats(name string) (Stats, error) {
	fd, err := t.openat(name, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxStats+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxStats {
		return nil, fmt.Errorf("%s: more than %d bytes: not a stats file", name, MaxStats)
	}
	st, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return st, nil
}

// openat opens name (relative, '/'-separated) below the root descriptor,
// following no symlink and leaving no mount.
func (t *Tree) openat(name string, flags int) (int, error) {
	if t.fd < 0 {
		return -1, os.ErrClosed
	}
	flags |= unix.O_NOFOLLOW | unix.O_CLOEXEC
	how := unix.OpenHow{
		Flags:   uint64(flags),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	fd, err := unix.Openat2(t.fd, name, &how)
	if err != unix.ENOSYS && err != unix.EPERM {
		return fd, wrap(name, err)
	}
	// No openat2 (older kernel, or a seccomp filter that refuses it):
	// one component at a time, none of them followed if a symlink.
	dir := t.fd
	parts := strings.Split(name, "/")
	for i, p := range parts {
		if p == "" || p == "." || p == ".." {
			if dir != t.fd {
				unix.Close(dir)
			}
			return -1, wrap(name, unix.EINVAL)
		}
		fl := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if i == len(parts)-1 {
			fl = flags
		}
		next, err := unix.Openat(dir, p, fl, 0)
		if dir != t.fd {
			unix.Close(dir)
		}
		if err != nil {
			return -1, wrap(name, err)
		}
		dir = next
	}
	return dir, nil
}

func wrap(name string, err error) error {
	if err == nil {
		return nil
	}
	return &os.PathError{Op: "open", Path: name, Err: err}
}
