// Package mount puts a FUSE filesystem on a directory the caller holds, and
// knows that mount afterwards by its mount id, never by a path string.
//
// A daemon running as root that mounts on a path in a shared directory
// (/tmp/vm1) must not be turned against the machine by whoever can write
// that directory: between a check and mount(2), PATH can become a symbolic
// link to any directory, and mount(2) follows it. So:
//
//   - Open takes PATH's parent as a descriptor, never follows a symlink
//     at PATH, creates PATH if missing, detaches a dead mount of the same
//     type left at PATH, refuses a live one, and holds PATH's directory
//     open with an exclusive flock for the daemon's life (a second daemon
//     starting on the same PATH is refused rather than stacked on top).
//   - Mount, as root, builds the FUSE mount detached (fsopen, fsmount) and
//     attaches it to the held directory (move_mount): it lands on the
//     object that was checked, wherever a rename may have moved it. It
//     then proves that PATH shows that mount (same mount id); otherwise
//     it undoes it. Without root it goes through fusermount3 (setuid, with
//     checks of its own) and proves the same afterwards.
//   - Mounted and Unmount look for that mount id in the mount table.
//
// The mount table is /proc/self/mountinfo, this process's mount namespace.
package mount

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Point is a mount point held open: PATH's parent and PATH itself, both as
// descriptors, and PATH's directory locked.
type Point struct {
	Path    string
	Created bool // Open made the directory; Close removes it

	parent int    // O_PATH of filepath.Dir(Path)
	name   string // filepath.Base(Path)
	dir    int    // the directory itself, O_RDONLY, flocked
	locked bool   // the flock is ours
	fstype string // the mount type this point is for, "fuse.multifs"
}

// ErrLive means a live multifs already serves the multilink: PATH is a
// live mount of the same type (or another daemon is starting on it), or
// (control.OpenSockDir) a live multifs holds its socket directory. One
// error for both, so that the CLI says the same thing whichever it met
// first.
var ErrLive = errors.New("already served by a live multifs")

// Open prepares path (absolute, its parent already resolved) for a mount
// of type fstype. See the package doc for what it checks.
func Open(path, fstype string, warn func(string)) (*Point, error) {
	p := &Point{Path: path, name: filepath.Base(path), fstype: fstype, parent: -1, dir: -1}
	var err error
	p.parent, err = unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Dir(path), err)
	}
	if err := p.open(warn); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// deadFUSE tells a FUSE mount whose server is gone by what a request to
// it returns: ENOTCONN once the connection is down; ECONNABORTED for a
// request caught by the abort (the daemon's death), and for every request
// to a connection aborted through /sys/fs/fuse/connections.
func deadFUSE(err error) bool { return err == unix.ENOTCONN || err == unix.ECONNABORTED }

func (p *Point) open(warn func(string)) error {
	var st unix.Stat_t
	err := unix.Fstatat(p.parent, p.name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == unix.ENOENT:
		if err := unix.Mkdirat(p.parent, p.name, 0o700); err != nil {
			return fmt.Errorf("creating mountpoint %s: %w", p.Path, err)
		}
		p.Created = true
	case deadFUSE(err):
		// The root of a FUSE mount whose daemon died: lstat asks the
		// dead server. stale() knows it by the mount table.
	case err != nil:
		return fmt.Errorf("%s: %w", p.Path, err)
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		// Mounting would follow it: in /tmp, to wherever its owner chose.
		return fmt.Errorf("%s: a symbolic link; give the directory it points to, if that is meant", p.Path)
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("%s: not a directory", p.Path)
	}
	if !p.Created {
		if err := p.clearStale(warn); err != nil {
			return err
		}
	}
	fd, err := unix.Openat(p.parent, p.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ELOOP || err == unix.ENOTDIR {
			return fmt.Errorf("%s: replaced while multifs was starting (now not a directory)", p.Path)
		}
		return fmt.Errorf("%s: %w", p.Path, err)
	}
	p.dir = fd
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if err == unix.EWOULDBLOCK {
			return fmt.Errorf("%s: %w (another multifs is starting on it)", p.Path, ErrLive)
		}
		return fmt.Errorf("%s: flock: %w", p.Path, err)
	}
	p.locked = true
	// Locked: nobody else mounts here now. What the lock covers must
	// still be what PATH names, and not a mount point (a daemon that won
	// the race for the lock and mounted before we opened).
	pid := mustMntID(p.parent)
	if id, err := mntID(p.parent, p.name); err != nil || id != pid || mustMntID(fd) != pid {
		return fmt.Errorf("%s: %w", p.Path, ErrLive)
	}
	if !p.Created {
		empty, first, err := isEmpty(fd)
		if err != nil {
			return fmt.Errorf("%s: %w", p.Path, err)
		}
		if !empty {
			var st unix.Stat_t
			if unix.Fstatat(fd, first, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
				// Most likely a newer vdeplug4 ptp client started before
				// us: finding no entry, it listens there itself.
				return fmt.Errorf("%s: directory not empty (holds %s, a socket: a vde_plug ptp://%s/%s started before multifs, or left running when multifs was unmounted, may be listening there; stop it and remove the socket, then start multifs)", p.Path, first, p.Path, first)
			}
			return fmt.Errorf("%s: directory not empty (holds %s)", p.Path, first)
		}
	}
	return nil
}

// clearStale looks at what is mounted at PATH, if anything: a dead mount of
// our type is detached (as often as they are stacked), a live one or one of
// another type is refused.
func (p *Point) clearStale(warn func(string)) error {
	for i := 0; i < 8; i++ {
		fd, err := unix.Openat(p.parent, p.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			if err == unix.ELOOP || err == unix.ENOTDIR {
				return fmt.Errorf("%s: not a directory", p.Path)
			}
			return fmt.Errorf("%s: %w", p.Path, err)
		}
		id, parentID := mustMntID(fd), mustMntID(p.parent)
		if id == parentID {
			unix.Close(fd)
			return nil // not a mount point
		}
		m, ok, err := lookupID(id)
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("%s: a mount point, and the mount table cannot be read: %w", p.Path, err)
		}
		if !ok {
			unix.Close(fd)
			return fmt.Errorf("%s: a mount point not in the mount table", p.Path)
		}
		if m.fstype != p.fstype {
			unix.Close(fd)
			return fmt.Errorf("%s: already a mount point (%s)", p.Path, m.fstype)
		}
		var sfs unix.Statfs_t
		if err := unix.Fstatfs(fd, &sfs); !deadFUSE(err) {
			unix.Close(fd)
			return fmt.Errorf("%s: %w", p.Path, ErrLive)
		}
		warn("detaching the stale mount of a multifs that died")
		err = detach(fd, p.Path)
		unix.Close(fd)
		if err != nil && err != unix.EINVAL { // EINVAL: another start detached it first
			return fmt.Errorf("%s: detaching a stale mount: %w", p.Path, err)
		}
	}
	return fmt.Errorf("%s: stale mounts keep coming back", p.Path)
}

// detach lazily unmounts the mount whose root fd holds (an O_PATH
// descriptor): through /proc/self/fd, that exact mount.
func detach(fd int, path string) error {
	if os.Geteuid() == 0 {
		return unix.Unmount(fdPath(fd), unix.MNT_DETACH)
	}
	return fusermount("-uz", path)
}

// Close releases the lock and the descriptors, and removes the directory if
// Open made it and held its lock (only if it is still an empty directory:
// rmdir). A start that made PATH but lost the lock to a concurrent one
// leaves PATH to the winner, which is about to mount on it.
func (p *Point) Close() {
	if p.parent >= 0 {
		if p.Created && p.locked {
			unix.Unlinkat(p.parent, p.name, unix.AT_REMOVEDIR)
		}
	}
	if p.dir >= 0 {
		unix.Close(p.dir)
		p.dir = -1
	}
	if p.parent >= 0 {
		unix.Close(p.parent)
		p.parent = -1
	}
}

// Options of a FUSE mount.
type Options struct {
	FsName     string // the mount's source, shown in /proc/mounts
	Subtype    string // "multifs": the type is fuse.multifs
	AllowOther bool
}

// Mount is a mount this process made, known by its id.
type Mount struct {
	ID   uint64
	p    *Point
	path string
}

// Mount mounts a FUSE filesystem on p. serve is given the mountpoint to
// hand to go-fuse: "/dev/fd/N" (a /dev/fuse descriptor already mounted, as
// root) or p.Path (go-fuse mounts through fusermount3); it starts serving
// and returns once it does. On error, nothing is left mounted, and a
// server that serve started ends (its mount is gone).
func (p *Point) Mount(o Options, serve func(mountpoint string) error) (*Mount, error) {
	if os.Geteuid() != 0 {
		return p.mountFusermount(serve)
	}
	fuseFD, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	mfd, err := newFuseMount(fuseFD, o)
	if err != nil {
		unix.Close(fuseFD)
		return nil, err
	}
	defer unix.Close(mfd)
	// go-fuse owns fuseFD from here on, and answers the kernel's INIT.
	// Until the move below, nobody but us can reach the mount; if we
	// return early, closing mfd drops its last reference, which ends
	// the FUSE connection and the server with it.
	if err := serve(fmt.Sprintf("/dev/fd/%d", fuseFD)); err != nil {
		return nil, err
	}
	if err := unix.MoveMount(mfd, "", p.dir, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return nil, fmt.Errorf("move_mount: %w", err)
	}
	m := &Mount{ID: mustMntID(mfd), p: p, path: p.Path}
	if err := m.atPath(); err != nil {
		// Attached to the directory we checked, which is no longer at
		// PATH: take it off again, by the handle we still hold.
		unix.Unmount(fdPath(mfd), unix.MNT_DETACH)
		return nil, err
	}
	return m, nil
}

// newFuseMount makes a detached FUSE mount served through fuseFD and
// returns its mount descriptor.
func newFuseMount(fuseFD int, o Options) (int, error) {
	fsfd, err := unix.Fsopen("fuse", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen fuse: %w", err)
	}
	defer unix.Close(fsfd)
	set := func(k, v string) error {
		if err := unix.FsconfigSetString(fsfd, k, v); err != nil {
			return fmt.Errorf("fuse mount option %s=%s: %w", k, v, fsError(fsfd, err))
		}
		return nil
	}
	flag := func(k string) error {
		if err := unix.FsconfigSetFlag(fsfd, k); err != nil {
			return fmt.Errorf("fuse mount option %s: %w", k, fsError(fsfd, err))
		}
		return nil
	}
	steps := []func() error{
		func() error { return set("source", o.FsName) },
		func() error { return set("subtype", o.Subtype) },
		func() error { return set("fd", strconv.Itoa(fuseFD)) },
		func() error { return set("rootmode", "40000") },
		func() error { return set("user_id", strconv.Itoa(os.Geteuid())) },
		func() error { return set("group_id", strconv.Itoa(os.Getegid())) },
		// The kernel enforces the modes the tree shows, for everyone
		// but root.
		func() error { return flag("default_permissions") },
	}
	if o.AllowOther {
		steps = append(steps, func() error { return flag("allow_other") })
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return -1, err
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("creating the fuse mount: %w", fsError(fsfd, err))
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return -1, fmt.Errorf("fsmount: %w", err)
	}
	return mfd, nil
}

// fsError adds the kernel's own message, which fsconfig keeps on fsfd.
func fsError(fsfd int, err error) error {
	buf := make([]byte, 256)
	n, rerr := unix.Read(fsfd, buf)
	if rerr != nil || n <= 0 {
		return err
	}
	return fmt.Errorf("%w (%s)", err, buf[:n])
}

// mountFusermount mounts without privileges: go-fuse runs fusermount3 on
// the path, and the mount is then identified as the one of our type at
// PATH that was not there before.
func (p *Point) mountFusermount(serve func(string) error) (*Mount, error) {
	// fusermount3 opens /dev/fuse as the user; when it cannot, all it
	// says is "fusermount exited with code 256".
	if fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("cannot open /dev/fuse (%v): an unprivileged multifs needs read and write access to it "+
			"(as root: chmod 0666 /dev/fuse, the mode Debian's fuse3 gives it), or run multifs as root", err)
	} else {
		unix.Close(fd)
	}
	if err := serve(p.Path); err != nil {
		return nil, err
	}
	id, err := mntID(p.parent, p.name)
	m := &Mount{ID: id, p: p, path: p.Path}
	if err == nil && id != mustMntID(p.dir) {
		if mi, ok, _ := lookupID(id); ok && mi.fstype == p.fstype {
			return m, nil
		}
	}
	fusermount("-uz", p.Path)
	return nil, fmt.Errorf("cannot find the new mount at %s afterwards; undone", p.Path)
}

// atPath proves that PATH, looked up now without following a symlink,
// shows this mount.
func (m *Mount) atPath() error {
	id, err := mntID(m.p.parent, m.p.name)
	if err != nil {
		return fmt.Errorf("%s no longer names the directory multifs checked (%v); mount undone", m.path, err)
	}
	if id != m.ID {
		return fmt.Errorf("%s was replaced while multifs was mounting; mount undone", m.path)
	}
	return nil
}

// Mounted reports whether the mount is still in the mount table. An
// error (the table could not be read, out of descriptors say) tells
// nothing either way.
func (m *Mount) Mounted() (bool, error) {
	_, ok, err := lookupID(m.ID)
	return ok, err
}

// mightBeMounted is Mounted where an unreadable table counts as mounted:
// what unmounting needs, since trying costs nothing when it is not.
func (m *Mount) mightBeMounted() bool {
	ok, err := m.Mounted()
	return ok || err != nil
}

// Unmount removes the mount if it is still there: through PATH's parent
// descriptor, never following a symlink, and only once PATH is shown to
// be this mount. A busy mount (a shell cd'd into it) is retried for about
// a second, then detached lazily. It reports what it did for the log.
func (m *Mount) Unmount(debug func(error)) (lazy bool, err error) {
	for i := 0; i < 10 && m.mightBeMounted(); i++ {
		if err := m.atPath(); err != nil {
			return false, err
		}
		if err := m.unmountOnce(0); err == nil {
			return false, nil
		} else {
			debug(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !m.mightBeMounted() {
		return false, nil
	}
	if err := m.atPath(); err != nil {
		return false, err
	}
	return true, m.unmountOnce(unix.MNT_DETACH)
}

func (m *Mount) unmountOnce(flags int) error {
	if os.Geteuid() == 0 {
		return unix.Unmount(fmt.Sprintf("/proc/self/fd/%d/%s", m.p.parent, m.p.name), flags|unix.UMOUNT_NOFOLLOW)
	}
	if flags&unix.MNT_DETACH != 0 {
		return fusermount("-uz", m.path)
	}
	return fusermount("-u", m.path)
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// mntID is the id of the mount that dirfd/name is on (name itself not
// followed if a symlink), asked without a round trip to a FUSE server
// (which may be dead, or be this process).
func mntID(dirfd int, name string) (uint64, error) {
	var sx unix.Statx_t
	flags := unix.AT_SYMLINK_NOFOLLOW | unix.AT_STATX_DONT_SYNC
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	if err := unix.Statx(dirfd, name, flags, unix.STATX_MNT_ID, &sx); err != nil {
		return 0, err
	}
	if sx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, errors.New("statx: no mount id")
	}
	return sx.Mnt_id, nil
}

func mustMntID(fd int) uint64 {
	id, err := mntID(fd, "")
	if err != nil {
		return 0
	}
	return id
}

// isEmpty reads a directory through fd (without moving fd's own offset
// for anyone else: fd is ours alone).
func isEmpty(fd int) (bool, string, error) {
	f := os.NewFile(uintptr(dupCloexec(fd)), "mountpoint")
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err == io.EOF || (err == nil && len(names) == 0) {
		return true, "", nil
	}
	if err != nil {
		return false, "", err
	}
	return false, names[0], nil
}

func dupCloexec(fd int) int {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return d
}

// fusermount runs fusermount3 with flag (-u, -uz) on path: the way an
// unprivileged daemon unmounts; fusermount3 checks that the mount is the
// user's own.
func fusermount(flag, path string) error {
	out, err := exec.Command("fusermount3", flag, path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 %s: %w: %s", flag, err, strings.TrimSpace(string(out)))
	}
	return nil
}
