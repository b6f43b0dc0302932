package fsys

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"multifs/multilink"
	"multifs/multilink/conn/conntest"
	"multifs/perms"
)

func TestTreeShape(t *testing.T) {
	dir, _, _ := mount(t, perms.Spec{})
	if got, want := names(t, dir), []string{"ctl", "host", "links", "seqpacket", "stats"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("root lists %v, want %v", got, want)
	}
	if got, want := names(t, filepath.Join(dir, "host")), []string{"ctl", "seqpacket", "stats", "vhost-user"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("host/ lists %v, want %v", got, want)
	}
	if got, _ := os.Readlink(filepath.Join(dir, "ctl")); got != "/sock/ctl" {
		t.Fatalf("ctl -> %q", got)
	}
	for link, want := range map[string]string{
		"host/ctl": "/sock/host.ctl", "seqpacket": "/sock/seqpacket", "host/seqpacket": "/sock/host.seqpacket",
		"host/vhost-user": "/sock/host.vhost-user",
	} {
		if got, _ := os.Readlink(filepath.Join(dir, link)); got != want {
			t.Fatalf("%s -> %q, want %q", link, got, want)
		}
	}
	if v := statKey(t, filepath.Join(dir, "host", "stats"), "attached"); v != "no" {
		t.Fatalf("attached: %s", v)
	}
	if v := statKey(t, filepath.Join(dir, "stats"), "host"); v != "detached" {
		t.Fatalf("host: %s", v)
	}
}

func TestModes(t *testing.T) {
	tests := []struct {
		spec                    perms.Spec
		dir, stats, close, root uint32
	}{
		{perms.Spec{}, 0o2700, 0o400, 0o200, 0o2700},
		{perms.Spec{Mode: 0o666, ModeSet: true}, 0o2777, 0o444, 0o222, 0o2777},
		{perms.Spec{Mode: 0o660, ModeSet: true, Dirmode: 0o2750, DirmodeSet: true}, 0o2750, 0o440, 0o220, 0o2750},
	}
	for _, tc := range tests {
		dir, ml, p := mount(t, tc.spec)
		l, _ := addLink(ml, multilink.PeerInfo{}, newNullConn(), nil)
		ln := filepath.Join(dir, "links", "1")
		for path, want := range map[string]uint32{
			dir: tc.root, ln: tc.dir, filepath.Join(dir, "links"): tc.dir, filepath.Join(dir, "host"): tc.dir,
			filepath.Join(ln, "stats"): tc.stats, filepath.Join(ln, "close"): tc.close,
			filepath.Join(dir, "stats"): tc.stats, filepath.Join(dir, "host", "stats"): tc.stats,
		} {
			var st syscall.Stat_t
			if err := syscall.Stat(path, &st); err != nil {
				t.Fatal(err)
			}
			if st.Mode&0o7777 != want || st.Uid != p.UID || st.Gid != p.GID {
				t.Errorf("%s: mode %04o uid %d gid %d, want %04o %d %d", path, st.Mode&0o7777, st.Uid, st.Gid, want, p.UID, p.GID)
			}
		}
		l.Close()
	}
}

func TestLinksAppearAndVanishAtOnce(t *testing.T) {
	dir, ml, _ := mount(t, perms.Spec{})
	links := filepath.Join(dir, "links")
	var ports []*multilink.Port
	for i := 0; i < 3; i++ {
		p, _ := addLink(ml, multilink.PeerInfo{Transport: "vde", PID: int32(100 + i)}, newNullConn(), nil)
		ports = append(ports, p)
		// no sleep: nothing may be cached
		if _, err := os.Stat(filepath.Join(links, ports[i].IDString())); err != nil {
			t.Fatalf("link %d not visible at once: %v", p.ID, err)
		}
	}
	if got := names(t, links); !reflect.DeepEqual(got, []string{"1", "2", "3"}) {
		t.Fatalf("links %v", got)
	}
	if v := statKey(t, filepath.Join(links, "2", "stats"), "pid"); v != "101" {
		t.Fatalf("pid %s", v)
	}
	ports[1].Close()
	if got := names(t, links); !reflect.DeepEqual(got, []string{"1", "3"}) {
		t.Fatalf("after close: links %v", got)
	}
	if _, err := os.Stat(filepath.Join(links, "2")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat of a closed link: %v", err)
	}
	for _, bad := range []string{"0", "01", "x", "4", "-1"} {
		if _, err := os.Stat(filepath.Join(links, bad)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("links/%s: %v", bad, err)
		}
	}
	if v := statKey(t, filepath.Join(dir, "stats"), "links"); v != "2" {
		t.Fatalf("links: %s", v)
	}
	if v := statKey(t, filepath.Join(dir, "stats"), "links_total"); v != "3" {
		t.Fatalf("links_total: %s", v)
	}
}

func TestCloseFile(t *testing.T) {
	dir, ml, _ := mount(t, perms.Spec{})
	l, _ := addLink(ml, multilink.PeerInfo{}, newNullConn(), nil)
	closePath := filepath.Join(dir, "links", "1", "close")

	for _, bad := range []string{"0", "abc", "1 1", "11", "1\n\n", " 1", "\n", strings.Repeat("1", 1<<20)} {
		err := os.WriteFile(closePath, []byte(bad), 0)
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("writing %.10q: %v, want EINVAL", bad, err)
		}
		if l.Closed() {
			t.Fatalf("writing %.10q closed the link", bad)
		}
	}
	// A write at an offset is not a command either.
	f, err := os.OpenFile(closePath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("1"), 3); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("write at offset 3: %v, want EINVAL", err)
	}
	f.Close()
	if _, err := os.ReadFile(closePath); !errors.Is(err, syscall.EACCES) {
		t.Errorf("reading close: %v, want EACCES", err)
	}
	if err := os.Truncate(closePath, 5); err == nil {
		t.Error("truncating close to 5 bytes succeeded")
	}

	// What `echo 1 > close` does: open with O_TRUNC, write "1\n".
	if err := os.WriteFile(closePath, []byte("1\n"), 0); err != nil {
		t.Fatalf("echo 1 > close: %v", err)
	}
	if !l.Closed() {
		t.Fatal("link still open after the write returned")
	}
	if _, err := os.Stat(filepath.Join(dir, "links", "1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("closed link still visible: %v", err)
	}
}

// A truncation of close to zero that is not an open's O_TRUNC (`truncate
// -s 0`, which is ftruncate on an open file, or truncate(2) by path) is a
// write of nothing: answered EINVAL as a write of an empty command is, and
// the link stays. The O_TRUNC of `echo 1 >` (and of `: >`, which writes
// nothing) still opens.
func TestCloseTruncate(t *testing.T) {
	dir, ml, _ := mount(t, perms.Spec{})
	l, _ := addLink(ml, multilink.PeerInfo{}, newNullConn(), nil)
	closePath := filepath.Join(dir, "links", "1", "close")

	// The answer to a write of nothing: the newline alone (write(2) of
	// zero bytes never reaches the daemon).
	empty := os.WriteFile(closePath, []byte("\n"), 0)
	if !errors.Is(empty, syscall.EINVAL) {
		t.Fatalf("a write of nothing: %v, want EINVAL", empty)
	}
	out, err := exec.Command("truncate", "-s", "0", closePath).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Invalid argument") {
		t.Errorf("truncate -s 0 close: %v %q, want it to fail with EINVAL", err, out)
	}
	if err := os.Truncate(closePath, 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("truncate(2) by path: %v, want EINVAL", err)
	}
	f, err := os.OpenFile(closePath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("ftruncate(2) of an open close file: %v, want EINVAL", err)
	}
	f.Close()
	// An O_TRUNC open settles its truncation: a later one is refused.
	f, err = os.OpenFile(closePath, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatalf("open with O_TRUNC: %v", err)
	}
	if err := os.Truncate(closePath, 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("truncate(2) by path after an O_TRUNC open: %v, want EINVAL", err)
	}
	f.Close()
	if l.Closed() {
		t.Fatal("a truncation closed the link")
	}
	if err := exec.Command("sh", "-c", ": > "+closePath).Run(); err != nil {
		t.Errorf(": > close (O_TRUNC, nothing written): %v", err)
	}
	if l.Closed() {
		t.Fatal(": > close closed the link")
	}
	if out, err := exec.Command("sh", "-c", "echo 1 > "+closePath).CombinedOutput(); err != nil {
		t.Fatalf("echo 1 > close: %v %s", err, out)
	}
	if !l.Closed() {
		t.Fatal("echo 1 > close left the link open")
	}
}

func TestStatsAreCurrentAndReadOnly(t *testing.T) {
	dir, ml, _ := mount(t, perms.Spec{})
	stats := filepath.Join(dir, "stats")
	before := statKey(t, stats, "links")
	addLink(ml, multilink.PeerInfo{}, newNullConn(), nil)
	if after := statKey(t, stats, "links"); before != "0" || after != "1" {
		t.Fatalf("links %s then %s: stale read", before, after)
	}
	// The size is the length of a rendering at stat time. Only idle_ms moves
	// on a link without traffic, and it only grows, so a read before and a
	// read after the stat bracket the size (9 ms to 10 ms adds a byte).
	linkStats := filepath.Join(dir, "links", "1", "stats")
	first, _ := os.ReadFile(linkStats)
	fi, err := os.Stat(linkStats)
	if err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(linkStats)
	if fi.Size() < int64(len(first)) || fi.Size() > int64(len(second)) {
		t.Fatalf("size %d, content %d then %d bytes", fi.Size(), len(first), len(second))
	}
	for _, path := range []string{stats, filepath.Join(dir, "host", "stats"), filepath.Join(dir, "links", "1", "stats")} {
		if err := os.WriteFile(path, []byte("x"), 0); !errors.Is(err, syscall.EACCES) {
			t.Errorf("writing %s: %v, want EACCES", path, err)
		}
		// By path, truncate(2) and utimensat(2) are setattrs, which the tree
		// refuses with EPERM as it does chmod and chown.
		if err := os.Truncate(path, 0); !errors.Is(err, syscall.EPERM) {
			t.Errorf("truncating %s: %v, want EPERM", path, err)
		}
		if err := os.Chtimes(path, time.Now(), time.Now()); !errors.Is(err, syscall.EPERM) {
			t.Errorf("touching %s: %v, want EPERM", path, err)
		}
	}
}

func TestTreeCannotBeChanged(t *testing.T) {
	dir, ml, _ := mount(t, perms.Spec{})
	addLink(ml, multilink.PeerInfo{}, newNullConn(), nil)
	ln := filepath.Join(dir, "links", "1")
	ops := map[string]func() error{
		"mkdir":          func() error { return os.Mkdir(filepath.Join(dir, "new"), 0o700) },
		"mkdir in links": func() error { return os.Mkdir(filepath.Join(dir, "links", "9"), 0o700) },
		"create":         func() error { return os.WriteFile(filepath.Join(dir, "host", "f"), nil, 0o600) },
		"rm stats":       func() error { return os.Remove(filepath.Join(dir, "stats")) },
		"rm ctl":         func() error { return os.Remove(filepath.Join(dir, "ctl")) },
		"rmdir link":     func() error { return os.Remove(ln) },
		"rmdir host":     func() error { return os.Remove(filepath.Join(dir, "host")) },
		"rm close":       func() error { return os.Remove(filepath.Join(ln, "close")) },
		"rename":         func() error { return os.Rename(filepath.Join(dir, "stats"), filepath.Join(dir, "s2")) },
		"rename link":    func() error { return os.Rename(ln, filepath.Join(dir, "links", "7")) },
		"symlink":        func() error { return os.Symlink("/etc", filepath.Join(dir, "l")) },
		"hard link":      func() error { return os.Link(filepath.Join(dir, "stats"), filepath.Join(dir, "s3")) },
		"mknod":          func() error { return syscall.Mknod(filepath.Join(dir, "sock"), syscall.S_IFSOCK|0o600, 0) },
		"chmod":          func() error { return os.Chmod(filepath.Join(dir, "stats"), 0o666) },
		"chmod dir":      func() error { return os.Chmod(ln, 0o777) },
		"chown":          func() error { return os.Chown(filepath.Join(dir, "stats"), 1, 1) },
	}
	for name, op := range ops {
		err := op()
		if !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.EACCES) {
			t.Errorf("%s: %v, want EPERM or EACCES", name, err)
		}
	}
	if got := names(t, dir); !reflect.DeepEqual(got, []string{"ctl", "host", "links", "seqpacket", "stats"}) {
		t.Fatalf("root changed: %v", got)
	}
	if got := names(t, ln); !reflect.DeepEqual(got, []string{"close", "stats"}) {
		t.Fatalf("link dir changed: %v", got)
	}
}

// TestPortStatsText: a link's stats text, the peer's description escaped
// to one line.
func TestPortStatsText(t *testing.T) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	ml := multilink.New(logrus.NewEntry(l))
	defer ml.Close()
	since := time.Date(2026, 11, 27, 10, 11, 12, 0, time.UTC)
	p, _ := addLink(ml, multilink.PeerInfo{Transport: "vde", Description: "vde_plug\nid: 99", PID: 42, UID: 1, GID: 2, Since: since}, newNullConn(), nil)
	// idle_ms is the time since the link joined: the one value that moves.
	idle := regexp.MustCompile(`(?m)^idle_ms: [0-9]+$`)
	got := idle.ReplaceAllString(portStats(p, false), "idle_ms: N")
	want := "id: 1\ntransport: vde\ndescription: vde_plug\\x0aid: 99\npid: 42\nuid: 1\ngid: 2\nsince: 2026-11-27T10:11:12Z\n" +
		"rx_packets: 0\nrx_bytes: 0\nrx_dropped: 0\ntx_packets: 0\ntx_bytes: 0\ntx_dropped: 0\nidle_ms: N\nrx_dup_dropped: 0\n"
	if got != want {
		t.Fatalf("stats:\n%s\nwant:\n%s", got, want)
	}
	hostWant := strings.TrimSuffix(want[len("id: 1\n"):], "rx_dup_dropped: 0\n")
	if host := idle.ReplaceAllString(portStats(p, true), "idle_ms: N"); host != hostWant {
		t.Fatalf("as the host, no id line and no rx_dup_dropped:\n%s", host)
	}
}

// TestDupAndIdleStats: two links carry the same frame; one copy reaches
// the host, the other is counted in the later link's rx_dup_dropped and
// the root's dup_dropped. idle_ms grows on the quiet host, not on a link
// that has just carried a frame.
func TestDupAndIdleStats(t *testing.T) {
	dir, ml, _ := mount(t, perms.Spec{})
	hc := conntest.New()
	ml.AttachHost(multilink.PeerInfo{}, hc, nil)
	a, b := conntest.New(), conntest.New()
	pa, _ := addLink(ml, multilink.PeerInfo{}, a, nil)
	pb, _ := addLink(ml, multilink.PeerInfo{}, b, nil)
	frame := []byte("\xff\xff\xff\xff\xff\xff\x02\x00\x00\x00\x00\x01\x08\x06 an ARP request, say")
	time.Sleep(200 * time.Millisecond)
	a.In <- frame
	for deadline := time.Now().Add(2 * time.Second); pa.Counters().RxPackets == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("link 1 did not read its frame")
		}
	}
	b.In <- frame
	for deadline := time.Now().Add(2 * time.Second); pb.Counters().RxPackets == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("link 2 did not read its frame")
		}
	}
	for deadline := time.Now().Add(2 * time.Second); ml.Totals().DupDropped == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no duplicate counted")
		}
	}
	if v := statKey(t, filepath.Join(dir, "links", "1", "stats"), "rx_dup_dropped"); v != "0" {
		t.Errorf("link 1, the first copy: rx_dup_dropped %s", v)
	}
	if v := statKey(t, filepath.Join(dir, "links", "2", "stats"), "rx_dup_dropped"); v != "1" {
		t.Errorf("link 2, the copy: rx_dup_dropped %s", v)
	}
	if v := statKey(t, filepath.Join(dir, "stats"), "dup_dropped"); v != "1" {
		t.Errorf("root dup_dropped %s", v)
	}
	if v := statKey(t, filepath.Join(dir, "host", "stats"), "tx_packets"); v != "1" {
		t.Errorf("host tx_packets %s, want the one copy", v)
	}
	hostIdle, _ := strconv.Atoi(statKey(t, filepath.Join(dir, "host", "stats"), "idle_ms"))
	linkIdle, _ := strconv.Atoi(statKey(t, filepath.Join(dir, "links", "2", "stats"), "idle_ms"))
	if hostIdle < 200 || linkIdle >= hostIdle {
		t.Errorf("idle_ms: quiet host %d (want >= 200), busy link %d (want less)", hostIdle, linkIdle)
	}
}
