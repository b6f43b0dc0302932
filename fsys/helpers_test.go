package fsys

import (
	"io"
	"os"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"multifs/multilink"
	"multifs/multilink/conn/conntest"
	"multifs/perms"
)

// newNullConn is a peer that never sends and accepts everything: the
// shared fake peer, left alone.
func newNullConn() *conntest.Peer { return conntest.New() }

func mount(t *testing.T, spec perms.Spec) (string, *multilink.Multilink, perms.Perms) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse on this machine")
	}
	p, err := perms.Resolve(spec, uint32(os.Geteuid()), uint32(os.Getegid()))
	if err != nil {
		t.Fatal(err)
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	ml := multilink.New(logrus.NewEntry(l))
	dir := t.TempDir()
	srv, err := Mount(dir, Config{Multilink: ml, Perms: p, LinkCtl: "/sock/ctl", HostCtl: "/sock/host.ctl", LinkSeq: "/sock/seqpacket", HostSeq: "/sock/host.seqpacket", HostVhost: "/sock/host.vhost-user", Log: logrus.NewEntry(l)})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		ml.Close()
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return dir, ml, p
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range es {
		n = append(n, e.Name())
	}
	return n
}

func statKey(t *testing.T, path, key string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok && k == key {
			return v
		}
	}
	t.Fatalf("%s has no key %q:\n%s", path, key, b)
	return ""
}

// addLink joins conn to ml as a new link, as control's admission does.
func addLink(ml *multilink.Multilink, info multilink.PeerInfo, conn multilink.Conn, onClose func()) (*multilink.Port, error) {
	return ml.Admit(false, info, conn, onClose, nil)
}
