package mount

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMountWatch: a mount and an unmount each wake the watch, and
// Type sees both; Close ends it, and a second Close is harmless.
// Mounting a tmpfs needs root, as the shell tests do.
func TestMountWatch(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	w, err := WatchMounts()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// The change itself is synchronous: what is tested is that a wake-up
	// follows it. Other packages' tests may mount and unmount meanwhile,
	// so wake-ups are taken until one is followed by a table showing it.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.After(2 * time.Second)
		for {
			select {
			case <-w.C:
				if cond() {
					return
				}
			case <-deadline:
				t.Fatalf("%s: no wake-up after it within 2 s", what)
			}
		}
	}
	drain := func() {
		select {
		case <-w.C:
		default:
		}
	}
	dir := t.TempDir()
	drain()
	if err := unix.Mount("multifs-test", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH) // EINVAL once unmounted below
	waitFor("mount", func() bool { fstype, ok := Type(dir); return ok && fstype == "tmpfs" })
	drain()
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
	waitFor("unmount", func() bool { _, ok := Type(dir); return !ok })

	done := make(chan struct{})
	go func() {
		w.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not end the watch")
	}
}

// Type returns the type of the topmost mount whose mount point reads path,
// if any. Tests only: a path string says nothing about which mount is
// whose, so the daemon asks by mount id (TypeOf).
func Type(path string) (string, bool) {
	fstype, found := "", false
	es, _ := entries()
	for _, e := range es {
		if e.mountpoint == path {
			fstype, found = e.fstype, true // the last mount on top wins
		}
	}
	return fstype, found
}
