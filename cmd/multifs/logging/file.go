package logging

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openFile opens path to append to it, creating it (0600) if missing, and
// checks the file it got, not the path: root must not append to whatever
// another user made path name. So path must not be a symbolic link
// (O_NOFOLLOW), and the file must be a regular file with one link (a hard
// link planted in /tmp is another file's second name), owned by the
// daemon's user or root. A refused path is neither created nor changed:
// O_NONBLOCK keeps a FIFO from blocking the open, O_NOCTTY a terminal
// from becoming ours, and nothing is written before the checks.
func openFile(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|
		unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0o600)
	if err != nil && isSymlink(path) {
		// ELOOP, or EACCES for O_CREAT on another user's link in a
		// sticky directory: either way, say what it is.
		err = unix.ELOOP
	}
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("%s: a symbolic link; give the file it points to, if that is meant", path)
	case errors.Is(err, unix.EISDIR):
		return nil, fmt.Errorf("%s: not a regular file (a directory)", path)
	case errors.Is(err, unix.ENXIO):
		// A FIFO without a reader, a socket, a device without a driver.
		return nil, fmt.Errorf("%s: not a regular file", path)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	euid := uint32(os.Geteuid())
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		err = fmt.Errorf("%s: not a regular file (%s)", path, fileKind(st.Mode))
	case st.Uid != euid && st.Uid != 0:
		err = fmt.Errorf("%s: owned by uid %d, not by multifs's user (uid %d) or root", path, st.Uid, euid)
	case st.Nlink > 1:
		err = fmt.Errorf("%s: has %d hard links; a log file must have one", path, st.Nlink)
	}
	if err == nil {
		err = unix.SetNonblock(fd, false)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

func isSymlink(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode()&os.ModeSymlink != 0
}

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFDIR:
		return "a directory"
	}
	return fmt.Sprintf("type %#o", mode&unix.S_IFMT)
}
