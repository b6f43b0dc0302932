package control

import (
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"multifs/control/client"
)

// vhostRequest sends a vhost-user GET_FEATURES on c and reports whether
// the daemon answered it.
func vhostAnswers(c net.Conn) bool {
	req := make([]byte, 12)
	binary.NativeEndian.PutUint32(req, 1) // GET_FEATURES
	binary.NativeEndian.PutUint32(req[4:], 1)
	if _, err := c.Write(req); err != nil {
		return false
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply := make([]byte, 20)
	n, _ := c.Read(reply)
	return n == 20 && binary.NativeEndian.Uint32(reply) == 1
}

// The vhost-user entry: a socket with the multilink's mode; a frontend
// connecting is the host (transport vhost-user, its credentials); a
// second one, or a vde-2 host, is refused while it is attached; its
// socket closing detaches it, and the next frontend attaches.
func TestVhostUserEntry(t *testing.T) {
	root, ml, srv := serve(t)
	path := srv.HostVhostUser()
	if filepath.Base(path) != HostVhostUserName {
		t.Fatalf("entry %s", path)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("entry: %v %v", st.Mode(), err)
	}
	first, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if !vhostAnswers(first) {
		t.Fatal("no reply to GET_FEATURES")
	}
	h := ml.Host()
	if h == nil || h.Info.Transport != "vhost-user" || h.Info.PID != int32(os.Getpid()) || h.Info.UID != uint32(os.Geteuid()) {
		t.Fatalf("host %+v", h)
	}
	second, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if vhostAnswers(second) {
		t.Fatal("a second frontend was served")
	}
	if _, err := client.Dial(filepath.Join(root, "host"), "vde host"); err == nil {
		t.Fatal("a vde-2 host was accepted beside the vhost-user one")
	}
	if ml.Host() != h {
		t.Fatal("the first frontend lost the host slot")
	}
	first.Close()
	waitFor(t, "the host detached", func() bool { return !ml.HostAttached() })
	third, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if !vhostAnswers(third) {
		t.Fatal("the next frontend is not served")
	}
	if h := ml.Host(); h == nil || h.Info.Transport != "vhost-user" {
		t.Fatal("the next frontend is not the host")
	}
}

// vhostMsg sends one vhost-user request with descriptors on c.
func vhostMsg(t *testing.T, c *net.UnixConn, req uint32, payload []byte, fds ...int) {
	t.Helper()
	b := make([]byte, 12+len(payload))
	binary.NativeEndian.PutUint32(b, req)
	binary.NativeEndian.PutUint32(b[4:], 1)
	binary.NativeEndian.PutUint32(b[8:], uint32(len(payload)))
	copy(b[12:], payload)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
		t.Fatal(err)
	}
}

// Frontends that attach, start both rings (memory table, kick and call
// eventfds) and go, again and again, leave nothing behind in the daemon:
// no descriptor, no goroutine, no mapping of their memory.
func TestVhostUserCyclesLeaveNothing(t *testing.T) {
	_, ml, srv := serve(t)
	const memName = "vhost-cycle-test"
	const memSize = 1 << 20
	cycle := func() {
		memfd, err := unix.MemfdCreate(memName, unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(memfd)
		unix.Ftruncate(memfd, memSize)
		mem, err := unix.Mmap(memfd, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(mem)
		uva := uint64(uintptr(unsafe.Pointer(&mem[0])))
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: srv.HostVhostUser(), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		u64 := func(v ...uint64) []byte {
			b := make([]byte, 8*len(v))
			for i, x := range v {
				binary.NativeEndian.PutUint64(b[8*i:], x)
			}
			return b
		}
		vhostMsg(t, c, 2, u64(1<<32)) // SET_FEATURES: VERSION_1
		vhostMsg(t, c, 5, u64(1, 0x100000, memSize, uva, 0), memfd)
		for q := uint64(0); q < 2; q++ {
			base := q * 0x10000
			vhostMsg(t, c, 8, u64(q|256<<32))                                        // SET_VRING_NUM
			vhostMsg(t, c, 9, u64(q, uva+base, uva+base+0x2000, uva+base+0x1000, 0)) // SET_VRING_ADDR: desc, used, avail
			kick, _ := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
			call, _ := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
			vhostMsg(t, c, 12, u64(q), kick) // SET_VRING_KICK
			vhostMsg(t, c, 13, u64(q), call) // SET_VRING_CALL
			unix.Close(kick)
			unix.Close(call)
		}
		if !vhostAnswers(c) {
			t.Fatal("frontend not served")
		}
		c.Close()
		waitFor(t, "the host detached", func() bool { return !ml.HostAttached() })
	}
	cycle() // what the first host leaves for good (a multilink's own)
	fds, routines := countFDs(t), runtime.NumGoroutine()
	const cycles = 30
	for i := 0; i < cycles; i++ {
		cycle()
	}
	mapped := func() int {
		b, _ := os.ReadFile("/proc/self/maps")
		return strings.Count(string(b), "memfd:"+memName)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && (countFDs(t) != fds || runtime.NumGoroutine() > routines || mapped() != 0) {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("after %d cycles: %d descriptors (%d before), %d goroutines (%d before), %d mappings", cycles, countFDs(t), fds, runtime.NumGoroutine(), routines, mapped())
	if n := countFDs(t); n != fds {
		t.Errorf("%d descriptors open after %d cycles, %d before", n, cycles, fds)
	}
	if n := runtime.NumGoroutine(); n > routines {
		t.Errorf("%d goroutines after %d cycles, %d before", n, cycles, routines)
	}
	if n := mapped(); n != 0 {
		t.Errorf("%d mappings of the frontends' memory left", n)
	}
}
