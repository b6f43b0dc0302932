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

// TestParseLine: a mount table line's id, device, mount point, type and
// (for FUSE) owner; the owner is the one user_id among the super options,
// whatever the source (a FUSE server's fsname, its own choice) says.
func TestParseLine(t *testing.T) {
	for _, c := range []struct {
		line     string
		want     Info
		hasOwner bool
	}{
		{`228 27 0:62 / /tmp/vm1 rw,nosuid,nodev,relatime - fuse.multifs /tmp/vm1 rw,user_id=0,group_id=0,allow_other,max_read=131072`,
			Info{ID: 228, Major: 0, Minor: 62, Mountpoint: "/tmp/vm1", Type: "fuse.multifs", Owner: 0}, true},
		{`230 27 0:63 / /tmp/a\040b rw,nosuid,nodev,relatime shared:301 master:2 - fuse.multifs multifs rw,user_id=1003,group_id=1003,default_permissions,allow_other`,
			Info{ID: 230, Minor: 63, Mountpoint: "/tmp/a b", Type: "fuse.multifs", Owner: 1003}, true},
		// The source is the server's to choose: what it says is not an option.
		{`231 27 0:64 / /tmp/c rw - fuse.multifs rw,user_id=0 rw,user_id=1003,group_id=1003`,
			Info{ID: 231, Minor: 64, Mountpoint: "/tmp/c", Type: "fuse.multifs", Owner: 1003}, true},
		{`232 27 0:65 / /tmp/d rw - fuse.multifs a\040-\040fuse.multifs\040x\040rw,user_id=0 rw,user_id=1003`,
			Info{ID: 232, Minor: 65, Mountpoint: "/tmp/d", Type: "fuse.multifs", Owner: 1003}, true},
		{`25 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw,errors=remount-ro`,
			Info{ID: 25, Major: 8, Minor: 1, Mountpoint: "/", Type: "ext4"}, false},
		// No owner unless exactly one well-formed user_id.
		{`233 27 0:66 / /tmp/e rw - fuse.multifs x rw,user_id=1003,user_id=0`,
			Info{ID: 233, Minor: 66, Mountpoint: "/tmp/e", Type: "fuse.multifs"}, false},
		{`234 27 0:67 / /tmp/f rw - fuse.multifs x rw,user_id=01`,
			Info{ID: 234, Minor: 67, Mountpoint: "/tmp/f", Type: "fuse.multifs"}, false},
		{`235 27 0:68 / /tmp/g rw - fuse.multifs x rw,user_id=4294967296`,
			Info{ID: 235, Minor: 68, Mountpoint: "/tmp/g", Type: "fuse.multifs"}, false},
		{`236 27 0:69 / /tmp/h rw - fuse.multifs x rw,user_id=-1,xuser_id=0`,
			Info{ID: 236, Minor: 69, Mountpoint: "/tmp/h", Type: "fuse.multifs"}, false},
		{`237 27 0:70 / /tmp/i rw - fuse.multifs`,
			Info{ID: 237, Minor: 70, Mountpoint: "/tmp/i", Type: "fuse.multifs"}, false},
	} {
		e, ok := parseLine(c.line)
		if !ok {
			t.Errorf("parseLine(%q) failed", c.line)
			continue
		}
		got := e.info()
		want := c.want
		want.HasOwner = c.hasOwner
		if got != want {
			t.Errorf("parseLine(%q) = %+v, want %+v", c.line, got, want)
		}
	}
	for _, bad := range []string{"", "1 2 3 4", "x 27 0:62 / /tmp rw - tmpfs tmpfs rw"} {
		if _, ok := parseLine(bad); ok {
			t.Errorf("parseLine(%q) succeeded", bad)
		}
	}
}

// TestLookupHeld: the table's line for a mount found by the id statx(2)
// gives for a descriptor on it, and the same device.
func TestLookupHeld(t *testing.T) {
	fd, err := unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var sx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, 0, &sx); err != nil {
		t.Fatal(err)
	}
	if sx.Mask&unix.STATX_MNT_ID == 0 {
		t.Skip("statx gives no mount id")
	}
	in, found, err := Lookup(sx.Mnt_id)
	if err != nil || !found {
		t.Fatalf("Lookup(%d) = %v, %v", sx.Mnt_id, found, err)
	}
	if in.Type != "proc" || in.Major != sx.Dev_major || in.Minor != sx.Dev_minor || in.HasOwner {
		t.Errorf("Lookup(/proc's mount) = %+v; statx dev %d:%d", in, sx.Dev_major, sx.Dev_minor)
	}
	if _, found, err := Lookup(1 << 62); found || err != nil {
		t.Errorf("Lookup(an id nobody has) = %v, %v", found, err)
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
