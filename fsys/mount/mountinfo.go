package mount

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// mountinfo is this process's mount table: its mount namespace's.
const mountinfo = "/proc/self/mountinfo"

// entry is one line of mountinfo:
// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
type entry struct {
	id           uint64
	major, minor uint32
	mountpoint   string
	fstype       string
	superopts    string
}

// parseLine reads one mountinfo line; false if it is not one.
func parseLine(line string) (entry, bool) {
	fields := strings.Fields(line)
	if len(fields) < 5 {
		return entry{}, false
	}
	id, err := strconv.ParseUint(fields[0], 10, 64)
	if err != nil {
		return entry{}, false
	}
	e := entry{id: id, mountpoint: mountPathEscapes.Replace(fields[4])}
	if maj, min, ok := strings.Cut(fields[2], ":"); ok {
		a, err1 := strconv.ParseUint(maj, 10, 32)
		b, err2 := strconv.ParseUint(min, 10, 32)
		if err1 == nil && err2 == nil {
			e.major, e.minor = uint32(a), uint32(b)
		}
	}
	// The optional fields (shared:N, master:N, ...) end at a lone "-";
	// the fields before them are numbers, paths (absolute, escaped) and
	// options, never "-".
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			if i+1 < len(fields) {
				e.fstype = fields[i+1]
			}
			if i+3 < len(fields) {
				e.superopts = fields[i+3]
			}
			break
		}
	}
	return e, true
}

// entries reads the mount table, whole or not at all: a table read in
// part (a daemon out of descriptors, a line past the scanner's bound) would
// tell that a mount is gone when it is not.
func entries() ([]entry, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var es []entry
	sc := bufio.NewScanner(f)
	// A line holds two paths of up to PATH_MAX, escaped, and options.
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if e, ok := parseLine(sc.Text()); ok {
			es = append(es, e)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, &os.PathError{Op: "read", Path: mountinfo, Err: err}
	}
	return es, nil
}

// lookupID finds the mount with that id; an error if the table cannot be
// read, which says nothing about the mount.
func lookupID(id uint64) (entry, bool, error) {
	es, err := entries()
	if err != nil {
		return entry{}, false, err
	}
	for _, e := range es {
		if e.id == id {
			return e, true, nil
		}
	}
	return entry{}, false, nil
}

// TypeOf returns the type of the mount with that id in this process's
// mount table; found is false if it is not there, and an error says the
// table could not be read (which tells nothing about the mount).
func TypeOf(id uint64) (fstype string, found bool, err error) {
	e, found, err := lookupID(id)
	return e.fstype, found, err
}

// Info is what this process's mount table says of one mount.
type Info struct {
	ID           uint64
	Major, Minor uint32 // the device of its superblock, as stat(2) gives it
	Mountpoint   string
	Type         string // "fuse.multifs", "ext4", ...
	// Owner is a FUSE mount's user_id: the user who mounted it, whose
	// program answers every request made in it. The kernel sets it from
	// the mount's options; fusermount3, the one way an ordinary user
	// mounts FUSE, drops any user_id given to it and puts the caller's
	// real uid. HasOwner is false if the options carry no user_id (not
	// FUSE) or more than one.
	Owner    uint32
	HasOwner bool
}

// Lookup returns what the mount table says of the mount with that id;
// found is false if it is not there, and an error says the table could
// not be read (which tells nothing about the mount). Mount ids are unique
// on the machine among live mounts: the id of a mount held open (by a
// descriptor on it) names that mount and no other.
func Lookup(id uint64) (info Info, found bool, err error) {
	e, found, err := lookupID(id)
	if !found || err != nil {
		return Info{}, found, err
	}
	return e.info(), true, nil
}

func (e entry) info() Info {
	in := Info{ID: e.id, Major: e.major, Minor: e.minor, Mountpoint: e.mountpoint, Type: e.fstype}
	in.Owner, in.HasOwner = ownerOf(e.superopts)
	return in
}

// ownerOf finds the one user_id=N among a FUSE mount's super options.
func ownerOf(superopts string) (uint32, bool) {
	var owner uint32
	n := 0
	for _, o := range strings.Split(superopts, ",") {
		v, ok := strings.CutPrefix(o, "user_id=")
		if !ok {
			continue
		}
		u, err := strconv.ParseUint(v, 10, 32)
		if err != nil || strconv.FormatUint(u, 10) != v {
			return 0, false
		}
		owner = uint32(u)
		n++
	}
	return owner, n == 1
}

// mountPathEscapes undoes the octal escapes of mount points in mountinfo.
var mountPathEscapes = strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)

// Watch tells of every change to the mount table. The kernel flags an
// open mountinfo with POLLPRI at each mount and unmount in the namespace
// (proc(5)), so the daemon sleeps in poll(2) between changes instead of
// re-reading the table on a timer: an idle multifs stays idle, however
// many mounts the machine has.
type Watch struct {
	C     <-chan struct{} // a value after one or more changes
	c     chan struct{}
	table int    // mountinfo, open
	stop  [2]int // a pipe: closing its write end ends the watch
	done  chan struct{}
	once  sync.Once
}

func WatchMounts() (*Watch, error) {
	fd, err := unix.Open(mountinfo, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: mountinfo, Err: err}
	}
	w := &Watch{c: make(chan struct{}, 1), table: fd, done: make(chan struct{})}
	w.C = w.c
	if err := unix.Pipe2(w.stop[:], unix.O_CLOEXEC); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("pipe2", err)
	}
	go w.run()
	return w, nil
}

func (w *Watch) run() {
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
func (w *Watch) Close() {
	w.once.Do(func() {
		unix.Close(w.stop[1])
		<-w.done
		unix.Close(w.stop[0])
		unix.Close(w.table)
	})
}
