package control

import (
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

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
