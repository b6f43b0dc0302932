package control

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"multifs/control/client"
	"multifs/control/wire"
	"multifs/fsys/mount"
	"multifs/multilink"
	"multifs/perms"
)

func TestJoinAndForward(t *testing.T) {
	root, ml, _ := serve(t)
	host := dial(t, filepath.Join(root, "host"))
	l1 := dial(t, root)
	l2 := dial(t, root)
	waitFor(t, "two links", func() bool { return len(ml.Links()) == 2 && ml.HostAttached() })
	p := ml.Links()[0]
	if p.Info.PID != int32(os.Getpid()) || p.Info.Description != "test pid=1" || p.Info.Transport != "vde" {
		t.Fatalf("peer info %+v", p.Info)
	}

	big := bytes.Repeat([]byte{0xab}, multilink.MaxFrame)
	if err := host.Send(big); err != nil {
		t.Fatal(err)
	}
	for _, l := range []*client.Client{l1, l2} {
		if got := recvFrame(t, l); !bytes.Equal(got, big) {
			t.Fatalf("link got %d bytes, want the %d-byte frame intact", len(got), len(big))
		}
	}
	small := bytes.Repeat([]byte{1}, 60)
	if err := l1.Send(small); err != nil {
		t.Fatal(err)
	}
	if got := recvFrame(t, host); !bytes.Equal(got, small) {
		t.Fatalf("host got %x", got)
	}
	buf := make([]byte, 100)
	if _, err := l2.Recv(buf, 100*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("link 2 received a frame from link 1 (err %v)", err)
	}
}

func TestSecondHostRefused(t *testing.T) {
	root, ml, _ := serve(t)
	// No waiting: a host holding its reply already holds the slot.
	first := dial(t, filepath.Join(root, "host"))
	if _, err := client.Dial(filepath.Join(root, "host"), "second"); err == nil {
		t.Fatal("a second host was accepted")
	}
	// Admit replies before it publishes the host: wait for that.
	waitFor(t, "the first host published", func() bool { return ml.Host() != nil })
	if h := ml.Host(); h.Info.Description != "test pid=1" {
		t.Fatalf("the first host must stay attached, not %q", h.Info.Description)
	}
	first.Close()
	waitFor(t, "host detach", func() bool { return !ml.HostAttached() })
	dial(t, filepath.Join(root, "host"))
}

func TestCloseEndsPeer(t *testing.T) {
	root, ml, srv := serve(t)
	c := dial(t, root)
	waitFor(t, "link", func() bool { return len(ml.Links()) == 1 })
	id := ml.Links()[0].ID
	data, _ := filepath.Glob(filepath.Join(srv.dir, "link.*"))
	if len(data) != 1 {
		t.Fatalf("data sockets %v", data)
	}
	start := time.Now()
	p := ml.Link(id)
	if p == nil {
		t.Fatalf("link %d is not open", id)
	}
	p.Close()
	select {
	case <-c.Done():
	case <-time.After(time.Second):
		t.Fatal("client did not see EOF within a second")
	}
	t.Logf("close to EOF: %v", time.Since(start))
	if _, err := os.Lstat(data[0]); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("data socket left behind: %v", err)
	}
}

func TestClientLeavingClosesLink(t *testing.T) {
	root, ml, _ := serve(t)
	c := dial(t, root)
	c.Close()
	waitFor(t, "link gone", func() bool { return len(ml.Links()) == 0 })
}

func TestBadHandshakesAreRefused(t *testing.T) {
	root, ml, _ := serve(t)
	notSocket := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notSocket, nil, 0o600)
	tests := []struct {
		name string
		req  []byte
	}{
		{"garbage", bytes.Repeat([]byte{0x55}, 200)},
		{"short then EOF", validRequest()[:50]},
		{"path not a socket", wire.Request{SockPath: notSocket}.Encode()},
		{"path missing", wire.Request{SockPath: "/nonexistent/sock"}.Encode()},
		{"oversized", append(validRequest(), make([]byte, 300)...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("unix", filepath.Join(root, "ctl"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(tc.req)
			c.(*net.UnixConn).CloseWrite()
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := c.Read(make([]byte, 200))
			if n != 0 || err == nil {
				t.Fatalf("server replied %d bytes (err %v); want the connection closed", n, err)
			}
		})
	}
	if n := len(ml.Links()); n != 0 {
		t.Fatalf("%d links after bad handshakes", n)
	}
	dial(t, root) // still serving
}

func TestStalledHandshakeBlocksNobody(t *testing.T) {
	root, _, _ := serve(t)
	stalled, err := net.Dial("unix", filepath.Join(root, "ctl"))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.Write(validRequest()[:10])
	start := time.Now()
	dial(t, root)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("join took %v behind a stalled client", d)
	}
}

// TestStaleSockDir: a socket directory held by a live multifs is refused;
// one a multifs left when it died (its lock released, sockets left) is
// cleaned and reused; one holding anything but sockets, or a foreign
// directory that is not empty, is refused and left as it was.
func TestStaleSockDir(t *testing.T) {
	p, _ := perms.Resolve(perms.Spec{Mode: 0o666, ModeSet: true}, uint32(os.Geteuid()), uint32(os.Getegid()))
	dir := filepath.Join(t.TempDir(), "s")
	live, err := OpenSockDir(dir, p)
	if err == nil {
		err = live.Take(p)
	}
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 || fi.Mode()&os.ModeSetgid == 0 {
		t.Fatalf("mode=0666: socket dir %v (%v), want 02755: nobody else may write it", fi.Mode(), err)
	}
	if _, err := OpenSockDir(dir, p); !errors.Is(err, mount.ErrLive) {
		t.Fatalf("live socket dir: %v, want mount.ErrLive", err)
	}
	// A dead socket, as a multifs killed with -9 leaves; then it dies
	// (its descriptors close, its lock goes).
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, LinkCtlName), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	die := func(d *SockDir) { unix.Close(d.lock); unix.Close(d.fd); unix.Close(d.parent) }
	die(live)
	again, err := OpenSockDir(dir, p)
	if err == nil {
		err = again.Take(p)
	}
	if err != nil {
		t.Fatalf("stale socket dir not reused: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, LinkCtlName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale socket left in place: %v", err)
	}
	die(again)
	os.WriteFile(filepath.Join(dir, "precious"), []byte("x"), 0o600)
	if _, err := OpenSockDir(dir, p); err == nil {
		t.Fatal("a socket dir holding a regular file was reused")
	}
	if _, err := os.Stat(filepath.Join(dir, "precious")); err != nil {
		t.Fatalf("multifs deleted a file it did not make: %v", err)
	}

	foreign := filepath.Join(t.TempDir(), "f")
	os.Mkdir(foreign, 0o751)
	os.WriteFile(filepath.Join(foreign, "theirs"), []byte("x"), 0o600)
	if _, err := OpenSockDir(foreign, p); err == nil {
		t.Fatal("a foreign non-empty directory was taken")
	}
	es, _ := os.ReadDir(foreign)
	if fi, _ := os.Stat(foreign); len(es) != 1 || fi.Mode().Perm() != 0o751 {
		t.Fatalf("a refused directory was changed: %d entries, mode %v", len(es), fi.Mode())
	}
}

func TestDefaultSockDir(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/vm1":  "/tmp/.vm1.multifs",
		"/tmp/vm1/": "/tmp/.vm1.multifs",
		"/a/b/c":    "/a/b/.c.multifs",
	} {
		if got := DefaultSockDir(in); got != want {
			t.Errorf("DefaultSockDir(%q) = %q, want %q", in, got, want)
		}
	}
}
