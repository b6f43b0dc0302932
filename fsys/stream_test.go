package fsys

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/sirupsen/logrus"

	"multifs/multilink"
	"multifs/perms"
)

// With the stream entries' targets given, PATH/stream and PATH/host/stream
// are symlinks to them, listed in order beside the others.
func TestStreamEntries(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse on this machine")
	}
	p, err := perms.Resolve(perms.Spec{}, uint32(os.Geteuid()), uint32(os.Getegid()))
	if err != nil {
		t.Fatal(err)
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	ml := multilink.New(logrus.NewEntry(l))
	dir := t.TempDir()
	srv, err := Mount(dir, Config{Multilink: ml, Perms: p, LinkCtl: "/sock/ctl", HostCtl: "/sock/host.ctl",
		LinkSeq: "/sock/seqpacket", HostSeq: "/sock/host.seqpacket",
		LinkStream: "/sock/stream", HostStream: "/sock/host.stream", Log: logrus.NewEntry(l)})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		ml.Close()
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	if got, want := names(t, dir), []string{"ctl", "host", "links", "seqpacket", "stats", "stream"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("root lists %v, want %v", got, want)
	}
	if got, want := names(t, filepath.Join(dir, "host")), []string{"ctl", "seqpacket", "stats", "stream"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("host/ lists %v, want %v", got, want)
	}
	for link, want := range map[string]string{"stream": "/sock/stream", "host/stream": "/sock/host.stream"} {
		if got, _ := os.Readlink(filepath.Join(dir, link)); got != want {
			t.Fatalf("%s -> %q, want %q", link, got, want)
		}
		if fi, err := os.Lstat(filepath.Join(dir, link)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("%s: %v, %v", link, fi, err)
		}
	}
}
