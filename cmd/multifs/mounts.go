package main

import (
	"bufio"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// mountinfo is this process's mount table: its mount namespace's.
const mountinfo = "/proc/self/mountinfo"

// mountType returns the filesystem type mounted exactly at path, if any.
func mountType(path string) (string, bool) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", false
	}
	defer f.Close()
	found, fstype := false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || mountPathEscapes.Replace(fields[4]) != path {
			continue
		}
		for i, fl := range fields {
			if fl == "-" && i+1 < len(fields) {
				found, fstype = true, fields[i+1] // the last mount on top wins
			}
		}
	}
	return fstype, found
}

// mountPathEscapes undoes the octal escapes of mount points in mountinfo.
var mountPathEscapes = strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)

// mountWatch tells of every change to the mount table. The kernel flags an
// open mountinfo with POLLPRI at each mount and unmount in the namespace
// (proc(5)), so the daemon sleeps in poll(2) between changes instead of
// re-reading the table on a timer: an idle multifs stays idle, however
// many mounts the machine has.
type mountWatch struct {
	C     <-chan struct{} // a value after one or more changes
	c     chan struct{}
	table int    // mountinfo, open
	stop  [2]int // a pipe: closing its write end ends the watch
	done  chan struct{}
	once  sync.Once
}

func watchMounts() (*mountWatch, error) {
	fd, err := unix.Open(mountinfo, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: mountinfo, Err: err}
	}
	w := &mountWatch{c: make(chan struct{}, 1), table: fd, done: make(chan struct{})}
	w.C = w.c
	if err := unix.Pipe2(w.stop[:], unix.O_CLOEXEC); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("pipe2", err)
	}
	go w.run()
	return w, nil
}

func (w *mountWatch) run() {
	defer close(w.done)
	fds := []unix.PollFd{
		{Fd: int32(w.table), Events: unix.POLLPRI},
		{Fd: int32(w.stop[0]), Events: unix.POLLIN},
	}
	for {
		if _, err := unix.Poll(fds, -1); err == unix.EINTR {
			continue
		} else if err != nil {
			return
		}
		if fds[1].Revents != 0 || fds[0].Revents&unix.POLLNVAL != 0 {
			return
		}
		// POLLPRI comes with POLLERR; the poll itself re-arms it.
		if fds[0].Revents&(unix.POLLPRI|unix.POLLERR) != 0 {
			select {
			case w.c <- struct{}{}:
			default: // a change not yet taken covers this one
			}
		}
	}
}

// Close ends the watch and waits for its goroutine.
func (w *mountWatch) Close() {
	w.once.Do(func() {
		unix.Close(w.stop[1])
		<-w.done
		unix.Close(w.stop[0])
		unix.Close(w.table)
	})
}
