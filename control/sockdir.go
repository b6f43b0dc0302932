package control

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"multifs/fsys/mount"
	"multifs/perms"
)

// DefaultSockDir is where the sockets of the multilink at mountpoint go when
// --sockdir is not given: a hidden sibling, /tmp/.vm1.multifs for /tmp/vm1.
func DefaultSockDir(mountpoint string) string {
	dir, base := filepath.Split(filepath.Clean(mountpoint))
	return filepath.Join(dir, "."+base+".multifs")
}

// LockName is the file inside a socket directory that a serving multifs
// holds an exclusive flock on for its whole life. Its presence also marks
// the directory as multifs's: a directory holding it (and, besides it,
// only sockets) is one a multifs left, which the next may clean.
const LockName = ".multifs.lock"

// SockDir is the socket directory, held: a descriptor on the directory and
// the lock inside it. While a SockDir is open no other multifs can take
// the directory, and nothing but the daemon's user can write in it.
type SockDir struct {
	Path     string
	parent   int // O_PATH of filepath.Dir(Path)
	name     string
	fd       int  // the directory, O_RDONLY
	lock     int  // LockName, flocked
	created  bool // OpenSockDir made the directory
	locked   bool
	marked   bool     // LockName was there before OpenSockDir
	stale    string   // what a multifs that died wrote in LockName (Record)
	leftover []string // its sockets, for Take to remove
	taken    bool     // Take ran: what is in the directory is ours
}

// OpenSockDir takes dir as the socket directory, creating it if missing,
// and locks it. An existing directory is used only if it is the daemon
// user's own, not a symbolic link, and empty or marked as multifs's
// (LockName) with nothing but sockets besides; anything else is refused
// with nothing changed. Take then makes it ready for use.
func OpenSockDir(dir string, p perms.Perms) (*SockDir, error) {
	// A multifs that is stopping removes the directory just after we may
	// have opened its lock; the retry takes the fresh one.
	for try := 0; ; try++ {
		d, retry, err := openSockDir(dir, p)
		if err == nil || !retry || try == 3 {
			return d, err
		}
	}
}

func openSockDir(dir string, p perms.Perms) (d *SockDir, retry bool, err error) {
	d = &SockDir{Path: dir, name: filepath.Base(dir), parent: -1, fd: -1, lock: -1}
	held := d // d itself is nil on the error returns
	defer func() {
		if err != nil {
			held.release(false)
		}
	}()
	fail := func(format string, a ...any) (*SockDir, bool, error) {
		return nil, false, fmt.Errorf("socket directory %s: "+format, append([]any{dir}, a...)...)
	}
	if d.parent, err = unix.Open(filepath.Dir(dir), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return fail("parent: %w", err)
	}
	switch err := unix.Mkdirat(d.parent, d.name, 0o700); err {
	case nil:
		d.created = true
	case unix.EEXIST:
	default:
		return fail("%w", err)
	}
	if d.fd, err = unix.Openat(d.parent, d.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
		if err == unix.ELOOP || err == unix.ENOTDIR { // O_NOFOLLOW|O_DIRECTORY on a symlink: either
			var st unix.Stat_t
			if unix.Fstatat(d.parent, d.name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				return fail("is a symbolic link; not following it")
			}
			return fail("exists and is not a directory")
		}
		return fail("%w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return fail("%w", err)
	}
	if st.Uid != p.UID {
		return fail("exists and belongs to uid %d, not to this daemon's user", st.Uid)
	}
	if !d.created {
		names, err := d.list()
		if err != nil {
			return fail("%w", err)
		}
		d.marked = contains(names, LockName)
		if len(names) > 0 && !d.marked {
			return fail("exists and holds %s, and is not one multifs left; not touching it", names[0])
		}
	}
	if d.lock, err = unix.Openat(d.fd, LockName, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600); err != nil {
		return fail("lock: %w", err)
	}
	var lst unix.Stat_t
	if err := unix.Fstat(d.lock, &lst); err != nil || lst.Mode&unix.S_IFMT != unix.S_IFREG || lst.Uid != p.UID {
		return fail("%s is not this daemon user's regular file; not touching it", LockName)
	}
	if err := unix.Flock(d.lock, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if err == unix.EWOULDBLOCK {
			return nil, false, fmt.Errorf("socket directory %s: %w", dir, mount.ErrLive)
		}
		return fail("flock: %w", err)
	}
	d.locked = true
	// Locked. Is it still the directory at dir, and the lock still in it?
	var now, nowLock unix.Stat_t
	if unix.Fstatat(d.parent, d.name, &now, unix.AT_SYMLINK_NOFOLLOW) != nil || now.Dev != st.Dev || now.Ino != st.Ino ||
		unix.Fstatat(d.fd, LockName, &nowLock, unix.AT_SYMLINK_NOFOLLOW) != nil || nowLock.Ino != lst.Ino {
		return nil, true, fmt.Errorf("socket directory %s: removed while multifs was starting", dir)
	}
	// Ours now. Whatever else is in it was left by a multifs that died:
	// sockets, removed; anything else is not ours to delete.
	names, err := d.list()
	if err != nil {
		return fail("%w", err)
	}
	for _, n := range names {
		if n == LockName {
			continue
		}
		var est unix.Stat_t
		if err := unix.Fstatat(d.fd, n, &est, unix.AT_SYMLINK_NOFOLLOW); err != nil || est.Mode&unix.S_IFMT != unix.S_IFSOCK {
			return fail("holds %s, which is not a socket; not touching it", n)
		}
	}
	d.leftover = names
	if d.marked {
		buf := make([]byte, 4096)
		if n, _ := unix.Pread(d.lock, buf, 0); n > 0 {
			d.stale = string(buf[:n])
		}
	}
	return d, false, nil
}

// Take makes the directory the daemon's to use: the sockets a multifs that
// died left are removed, the lock records this daemon, and the directory
// gets mode p.SockDirMode() and group grp. Until Take, an open SockDir has
// changed nothing in a directory that existed (so a start refused for
// another reason leaves a dead daemon's directory as it was).
func (d *SockDir) Take(p perms.Perms) error {
	for _, n := range d.leftover {
		if n != LockName {
			if err := unix.Unlinkat(d.fd, n, 0); err != nil && err != unix.ENOENT {
				return fmt.Errorf("socket directory %s: removing stale socket %s: %w", d.Path, n, err)
			}
		}
	}
	d.leftover = nil
	d.taken = true
	d.Record("")
	if p.GroupSet {
		if err := unix.Fchown(d.fd, -1, int(p.GID)); err != nil {
			return fmt.Errorf("socket directory %s: chown to group %d: %w", d.Path, p.GID, err)
		}
	}
	if err := unix.Fchmod(d.fd, p.SockDirMode()); err != nil {
		return fmt.Errorf("socket directory %s: chmod: %w", d.Path, err)
	}
	return nil
}

// Record writes the lock file's text: the daemon's pid, then extra (lines
// about this daemon's work that the next multifs should know if this one
// dies, e.g. that it made the mountpoint).
func (d *SockDir) Record(extra string) {
	text := "multifs pid " + strconv.Itoa(os.Getpid()) + "\n" + extra
	unix.Ftruncate(d.lock, 0)
	unix.Pwrite(d.lock, []byte(text), 0)
}

// Stale is what the multifs that left this directory behind had recorded
// (Record), or "" if the directory was not a dead multifs's.
func (d *SockDir) Stale() string { return d.stale }

// At is name inside the directory as a path that reaches it through the
// descriptor held: bind(2) takes a path, and this one cannot be
// redirected by renaming or replacing a directory above (a parent that
// others may write). It is valid while the SockDir is open.
func (d *SockDir) At(name string) string {
	return "/proc/self/fd/" + strconv.Itoa(d.fd) + "/" + name
}

// Join is name inside the directory as the path peers use.
func (d *SockDir) Join(name string) string { return filepath.Join(d.Path, name) }

// Apply gives the socket name in the directory mode and, if set, grp;
// relative to the descriptor, never following a symbolic link.
func (d *SockDir) Apply(name string, p perms.Perms, mode uint32) error {
	if p.GroupSet {
		if err := unix.Fchownat(d.fd, name, -1, int(p.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown %s to group %d: %w", d.Join(name), p.GID, err)
		}
	}
	if err := unix.Fchmodat(d.fd, name, mode, 0); err != nil {
		return fmt.Errorf("chmod %s: %w", d.Join(name), err)
	}
	return nil
}

// Unlink removes name from the directory, relative to the descriptor held:
// a rename above SOCKDIR cannot redirect it.
func (d *SockDir) Unlink(name string) { unix.Unlinkat(d.fd, name, 0) }

// list returns the names in the directory.
func (d *SockDir) list() ([]string, error) {
	dup, err := unix.FcntlInt(uintptr(d.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), d.Path)
	defer f.Close()
	if _, err := f.Seek(0, 0); err != nil {
		return nil, err
	}
	return f.Readdirnames(-1)
}

func contains(names []string, n string) bool {
	for _, m := range names {
		if m == n {
			return true
		}
	}
	return false
}

// Remove removes the sockets in the directory, its lock and the directory
// itself, and releases it. A stray non-socket makes the directory stay.
// Before Take, the directory holds nothing of ours but what OpenSockDir
// made: only that goes.
func (d *SockDir) Remove() error {
	return d.release(d.taken)
}

// release closes the directory; with remove, it first deletes what
// multifs put there, while still holding the lock.
func (d *SockDir) release(remove bool) error {
	var err error
	if remove && d.fd >= 0 {
		names, lerr := d.list()
		if lerr != nil {
			err = lerr
		}
		for _, n := range names {
			var st unix.Stat_t
			if unix.Fstatat(d.fd, n, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
				unix.Unlinkat(d.fd, n, 0)
			}
		}
		unix.Unlinkat(d.fd, LockName, 0)
		// The name goes only if it is still our directory's (its parent
		// may be writable by others, who may have moved it).
		var st, now unix.Stat_t
		if unix.Fstat(d.fd, &st) == nil && unix.Fstatat(d.parent, d.name, &now, unix.AT_SYMLINK_NOFOLLOW) == nil &&
			st.Dev == now.Dev && st.Ino == now.Ino {
			if rerr := unix.Unlinkat(d.parent, d.name, unix.AT_REMOVEDIR); rerr != nil && err == nil {
				err = fmt.Errorf("removing %s: %w", d.Path, rerr)
			}
		} else if err == nil {
			err = fmt.Errorf("removing %s: no longer the socket directory multifs made; left alone", d.Path)
		}
	} else if d.locked {
		// Refused once locked: leave nothing behind that we made.
		if d.created || !d.marked {
			unix.Unlinkat(d.fd, LockName, 0)
		}
		if d.created {
			unix.Unlinkat(d.parent, d.name, unix.AT_REMOVEDIR)
		}
	} else if d.created && d.fd >= 0 {
		// Not locked but made by us: only an empty directory goes (one
		// that a concurrent start put its lock in stays).
		unix.Unlinkat(d.parent, d.name, unix.AT_REMOVEDIR)
	}
	for _, fd := range []*int{&d.lock, &d.fd, &d.parent} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	return err
}
