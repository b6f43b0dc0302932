package control

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"multifs/perms"
)

// DefaultSockDir is where the sockets of the multilink at mountpoint go when
// --sockdir is not given: a hidden sibling, /tmp/.vm1.multifs for /tmp/vm1.
func DefaultSockDir(mountpoint string) string {
	dir, base := filepath.Split(filepath.Clean(mountpoint))
	return filepath.Join(dir, "."+base+".multifs")
}

// ErrInUse means a live multifs already serves that socket directory.
var ErrInUse = errors.New("already served by a live multifs")

// Alive reports whether something accepts connections on the links'
// listening socket in dir.
func Alive(dir string) bool {
	c, err := net.DialTimeout("unix", filepath.Join(dir, LinkCtlName), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// CreateSockDir makes dir with the multilink's dirmode and group. A leftover
// directory from a multifs that died is reused only if nothing answers on its
// ctl socket, it is ours, and it holds nothing but sockets: multifs never
// deletes what it did not make.
func CreateSockDir(dir string, p perms.Perms) error {
	err := os.Mkdir(dir, 0o700)
	if errors.Is(err, fs.ErrExist) {
		if err := cleanStale(dir, p); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	return p.Apply(dir, p.DirMode())
}

func cleanStale(dir string, p perms.Perms) error {
	if Alive(dir) {
		return fmt.Errorf("socket directory %s: %w", dir, ErrInUse)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("socket directory %s is a symbolic link; not following it", dir)
	}
	if !fi.IsDir() {
		return fmt.Errorf("socket directory %s exists and is not a directory", dir)
	}
	if uid, ok := ownerUID(fi); !ok || uid != p.UID {
		return fmt.Errorf("socket directory %s exists and belongs to someone else", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	for _, e := range entries {
		if e.Type()&fs.ModeSocket == 0 {
			return fmt.Errorf("socket directory %s exists and holds %s, which is not a socket; not touching it", dir, e.Name())
		}
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("removing stale socket: %w", err)
		}
	}
	return nil
}

// RemoveSockDir removes the socket directory and the sockets in it, and
// nothing else: a stray non-socket file makes it fail rather than delete.
func RemoveSockDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, e := range entries {
		if e.Type()&fs.ModeSocket != 0 {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return os.Remove(dir)
}

func ownerUID(fi fs.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, true
}
