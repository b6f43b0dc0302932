// Package treeclient reads and drives a live multifs control directory
// (the tree under PATH) from the outside: the client side of package
// fsys, for programs that are not the daemon. It is the one Go reader of
// stats text (ReadStats, ParseStats): multifs handoff uses a Client,
// test/vdeprobe a Tree, the bench and fsys's tests the parser.
//
// A program that runs as root and acts on a path in a shared directory
// (/tmp/vm1) must act on what it checked, not on whatever the path names a
// moment later, and only on a multifs it can trust. So PATH is opened
// once (O_PATH), without following a symlink at it, and the descriptor is
// proven to be the root of a multifs mount served by root or by the
// caller, without a single request to the mount's server:
//
//   - statx(2) (AT_STATX_DONT_SYNC, nothing asked of the filesystem) gives
//     its mount id and device, and says it is the root of its mount;
//   - that mount's line in /proc/self/mountinfo, found by the id (unique
//     among live mounts, and ours is held), has the same device, type
//     fuse.multifs (what the daemon mounts, itself or through fusermount3
//     or mount.fuse3: FUSE, subtype multifs), and a user_id (the user whose
//     program answers every request in that mount) of root or of the
//     caller. Anyone can mount a FUSE server with subtype multifs, and
//     with user_allow_other in /etc/fuse.conf let root into it; its
//     user_id is the one thing such a user cannot forge (fusermount3 sets
//     it from the caller's real uid). A server of someone else's would be
//     fed root's close writes and could stall root's reads at will.
//
// Then its stats file must parse and carry the keys every multifs root
// stats has (links, links_total, host).
//
// Files below it are opened with openat2(2) confined to the mount (no
// symlink, no magic link, no other mount, nothing above it), or component
// by component with O_NOFOLLOW where openat2 is missing. Reads are bounded
// (MaxStats, MaxLinks): a stats file is a few hundred bytes, anything much
// larger is not one.
//
// Tree does that I/O in the calling process; Client does it in a reader
// process of its own, and bounds each request in time (see client.go for
// why a process, not a goroutine).
//
// Once the daemon is gone, every call fails (ENOTCONN) rather than reading
// whatever a later mount on the same path would show.
package treeclient

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"multifs/fsys/mount"
)

// FSType is the mount type multifs's mounts have.
const FSType = "fuse.multifs"

// MaxStats bounds what is read of one stats file, and MaxLines its lines;
// MaxLinks the names read of links/.
const (
	MaxStats = 16 << 10
	MaxLines = 256
	MaxLinks = 1 << 17
)

// ErrNoLink means the link is not open (never was, or closed).
var ErrNoLink = errors.New("no such link")

// rootKeys are in every multifs root stats file.
var rootKeys = []string{"links", "links_total", "host"}

// Tree is a multifs control directory held open. Its methods that read or
// write (Root, Link, Links, CloseLink) wait in this process for as long as
// the mount's server takes to answer, and a thread waiting for an answer
// the server has begun on cannot be interrupted, even by SIGKILL: a
// program that must end on time uses a Client.
type Tree struct {
	Path  string
	Owner uint32 // the mount's user_id: 0 or the caller's euid
	fd    int    // the mount's root, O_PATH|O_DIRECTORY
}

// UntrustedError is a multifs-looking mount served by someone other than
// root or the caller.
type UntrustedError struct {
	Owner    uint32
	HasOwner bool // false: the mount's options name no single owner
}

func (e *UntrustedError) Error() string {
	if !e.HasOwner {
		return "refused: its mount options name no owner (user_id); only a multifs run by root or by yourself is trusted"
	}
	return fmt.Sprintf("refused: mounted by %s, neither root nor you; only a multifs run by root or by yourself is trusted", userName(e.Owner))
}

// userName is "user NAME (uid N)", or "uid N" if the uid has no name.
func userName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil && u.Username != "" {
		return fmt.Sprintf("user %s (uid %s)", strings.ToValidUTF8(u.Username, "?"), id)
	}
	return "uid " + id
}

// Trusted says whether a mount owned by uid may be acted on: root's, or
// the caller's own (its effective uid: the one its writes are made as).
func Trusted(uid uint32) bool { return uid == 0 || uid == uint32(os.Geteuid()) }

// Open takes the multifs mounted at path (its mountpoint, not a symlink to
// it), proves it is one and trusted, and reads its root stats, in this
// process; see the package doc. The error says what is wrong in a few
// words, without the path.
func Open(path string) (*Tree, error) {
	fd, err := openRoot(path)
	if err != nil {
		return nil, err
	}
	t, err := Adopt(fd)
	if err != nil {
		return nil, err
	}
	t.Path = path
	st, err := t.Root()
	if err == nil {
		err = checkRoot(st)
	}
	if err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// openRoot opens path as a descriptor on a directory, O_PATH: the final
// component is not followed if a symlink, and nothing is asked of a FUSE
// server whose mount it is (no open, no getattr; the lookup is in the
// directory above, which is another mount's).
func openRoot(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOTDIR || err == unix.ELOOP {
		// O_DIRECTORY|O_NOFOLLOW on a symlink says ENOTDIR: which was it?
		var st unix.Stat_t
		if unix.Lstat(path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			err = unix.ELOOP
		}
	}
	switch {
	case err == unix.ELOOP:
		return -1, errors.New("a symbolic link (give the mountpoint itself)")
	case err == unix.ENOTDIR:
		return -1, errors.New("not a directory")
	case err == unix.ENOTCONN:
		return -1, errors.New("a FUSE mount whose daemon is gone")
	case err != nil:
		return -1, err
	}
	return fd, nil
}

// Adopt takes fd, a descriptor on a directory (O_PATH will do), and
// proves it is the root of a trusted multifs mount, without a request to
// the mount's server. The Tree owns fd; on failure fd is closed.
func Adopt(fd int) (*Tree, error) {
	t, err := adopt(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return t, nil
}

// adopt is Adopt leaving fd open on failure.
func adopt(fd int) (*Tree, error) {
	t := &Tree{Path: "/proc/self/fd/" + strconv.Itoa(fd), fd: fd}
	if err := t.prove(); err != nil {
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

// prove checks the descriptor (package doc) with no FUSE request: no
// fstatfs(2) (FUSE asks the server: STATFS), no open (OPENDIR), and a
// statx that asks for nothing (mask 0: even where the caller may not
// enter the mount, it gives the mount id) and takes the kernel's cached
// attributes (AT_STATX_DONT_SYNC: no GETATTR). The mount table is enough:
// its type is the superblock's, and only FUSE makes a "fuse." type.
func (t *Tree) prove() error {
	var sx unix.Statx_t
	if err := unix.Statx(t.fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, 0, &sx); err != nil {
		return fmt.Errorf("statx: %w", err)
	}
	if sx.Mask&unix.STATX_MNT_ID == 0 {
		return errors.New("statx gives no mount id (kernel too old)")
	}
	if sx.Mode&unix.S_IFMT != 0 && sx.Mode&unix.S_IFMT != unix.S_IFDIR {
		return errors.New("not a directory")
	}
	in, found, err := mount.Lookup(sx.Mnt_id)
	if err != nil {
		return fmt.Errorf("mountinfo: %w", err)
	}
	if !found {
		return errors.New("its mount is not in /proc/self/mountinfo")
	}
	if in.Major != sx.Dev_major || in.Minor != sx.Dev_minor {
		return fmt.Errorf("its mount's line in /proc/self/mountinfo is of device %d:%d, not %d:%d", in.Major, in.Minor, sx.Dev_major, sx.Dev_minor)
	}
	if in.Type != "fuse" && !strings.HasPrefix(in.Type, "fuse.") && in.Type != "fuseblk" && !strings.HasPrefix(in.Type, "fuseblk.") {
		return errors.New("not a multifs mount (not FUSE)")
	}
	if sx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && sx.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return errors.New("not a multifs mountpoint (a directory inside a FUSE mount)")
	}
	if in.Type != FSType {
		return fmt.Errorf("not a multifs mount (a %s mount)", in.Type)
	}
	if !in.HasOwner || !Trusted(in.Owner) {
		return &UntrustedError{Owner: in.Owner, HasOwner: in.HasOwner}
	}
	t.Owner = in.Owner
	return nil
}

// checkRoot says whether st is a multifs root stats.
func checkRoot(st Stats) error {
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

// ReadStats reads one stats file from r, at most MaxStats bytes of it, and
// parses it (ParseStats). More than MaxStats bytes is an error: a stats
// file is a few hundred bytes, anything much larger is not one.
func ReadStats(r io.Reader) (Stats, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxStats+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxStats {
		return nil, fmt.Errorf("more than %d bytes: not a stats file", MaxStats)
	}
	return ParseStats(b)
}

// ParseStats parses the "key: value" lines of a stats file. Keys are
// lower-case words (a-z, 0-9, _); a line that is not one, or more than
// MaxLines, is an error: the text is then not what multifs writes. It is
// the one parser of stats text in Go: Tree, Client, the bench and
// test/vdeprobe read stats through it.
func ParseStats(text []byte) (Stats, error) {
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

// Links lists the open links' ids, ascending; at most MaxLinks.
func (t *Tree) Links() ([]uint64, error) {
	fd, err := t.openat("links", unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "links")
	defer f.Close()
	var ids []uint64
	for names := 0; ; {
		batch, err := f.Readdirnames(1024)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if names += len(batch); names > MaxLinks {
			return nil, fmt.Errorf("links: more than %d names: not a multifs", MaxLinks)
		}
		for _, n := range batch {
			if id, err := strconv.ParseUint(n, 10, 64); err == nil {
				ids = append(ids, id)
			}
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
	st, err := ReadStats(f)
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
