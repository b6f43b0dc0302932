package treeclient

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"multifs/control"
	"multifs/control/client"
	"multifs/control/engine"
	"multifs/fsys"
	"multifs/multilink"
	"multifs/perms"
)

func TestParseStats(t *testing.T) {
	got, err := ParseStats([]byte("id: 3\ndescription: \nrx_packets: 12\nweird:no space\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{"id": "3", "description": "", "rx_packets": "12", "weird": "no space"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if n, ok := got.Uint("rx_packets"); !ok || n != 12 {
		t.Errorf("Uint(rx_packets) = %d, %v", n, ok)
	}
	if _, ok := got.Uint("description"); ok {
		t.Error("Uint of an empty value succeeded")
	}
	if _, ok := got.Uint("absent"); ok {
		t.Error("Uint of an absent key succeeded")
	}
	if st, err := ParseStats(nil); err != nil || len(st) != 0 {
		t.Errorf("empty text: %v, %v", st, err)
	}
	for _, bad := range []string{
		"no colon here\n",
		"Upper: 1\n",
		": 1\n",
		"key with space: 1\n",
		"ok: 1\n\nafter_blank: 2\n",
		strings.Repeat("k: v\n", MaxLines+1),
		strings.Repeat("k", 65) + ": 1\n",
	} {
		if _, err := ParseStats([]byte(bad)); err == nil {
			t.Errorf("ParseStats(%.40q) succeeded", bad)
		}
	}
}

// endless is a reader that never ends, counting what is read of it.
type endless struct{ n int }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = "k: 1\n"[(e.n+i)%5]
	}
	e.n += len(p)
	return len(p), nil
}

func TestReadStats(t *testing.T) {
	st, err := ReadStats(strings.NewReader("links: 2\nlinks_total: 5\nhost: detached\n"))
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := st.Uint("links_total"); !ok || n != 5 || st["host"] != "detached" {
		t.Errorf("got %v", st)
	}
	// A file of MaxStats bytes is read; one byte more is not a stats file,
	// and a reader that never ends is read no further than that.
	line := strings.Repeat("k", 63) + ": " + strings.Repeat("v", 62) + "\n" // 128 bytes
	full := strings.Repeat(line, MaxStats/len(line))
	if len(full) != MaxStats {
		t.Fatalf("test text is %d bytes", len(full))
	}
	if _, err := ReadStats(strings.NewReader(full)); err != nil {
		t.Errorf("%d bytes: %v", len(full), err)
	}
	if _, err := ReadStats(strings.NewReader(full + "x")); err == nil {
		t.Errorf("%d bytes read as a stats file", len(full)+1)
	}
	e := &endless{}
	if _, err := ReadStats(e); err == nil || e.n > MaxStats+1<<10 {
		t.Errorf("endless reader: %v after %d bytes", err, e.n)
	}
}

// served is a multifs of the test's own: the multilink, its sockets and its
// FUSE tree, as the daemon puts them together.
type served struct {
	path string
	ml   *multilink.Multilink
}

func serve(t *testing.T) *served {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse on this machine")
	}
	p, err := perms.Resolve(perms.Spec{}, uint32(os.Geteuid()), uint32(os.Getegid()))
	if err != nil {
		t.Fatal(err)
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	log := logrus.NewEntry(l)
	base := t.TempDir()
	sd, err := control.OpenSockDir(filepath.Join(base, "sock"), p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sd.Remove() })
	if err := sd.Take(p); err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	ml := multilink.New(log)
	srv := control.NewServer(sd, p, ml, eng, log)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	fs, err := fsys.Mount(mnt, fsys.Config{
		Multilink: ml, Perms: p, Log: log,
		LinkCtl: srv.LinkCtl(), HostCtl: srv.HostCtl(), LinkSeq: srv.LinkSeqpacket(), HostSeq: srv.HostSeqpacket(),
	})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		ml.Close()
		if err := fs.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	srv.Serve()
	return &served{path: mnt, ml: ml}
}

func TestOpenProvesMultifs(t *testing.T) {
	s := serve(t)
	tr, err := Open(s.path)
	if err != nil {
		t.Fatalf("Open(the mount): %v", err)
	}
	defer tr.Close()
	st, err := tr.Root()
	if err != nil {
		t.Fatal(err)
	}
	if st["host"] != "detached" {
		t.Errorf("root stats host = %q", st["host"])
	}

	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(s.path, link); err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o600)
	for _, c := range []struct{ path, want string }{
		{t.TempDir(), "not FUSE"},
		{filepath.Join(s.path, "links"), "inside a FUSE mount"},
		{filepath.Join(s.path, "host"), "inside a FUSE mount"},
		{link, "symbolic link"},
		{notDir, "not a directory"},
		{filepath.Join(t.TempDir(), "absent"), "no such file"},
	} {
		tr, err := Open(c.path)
		if err == nil {
			tr.Close()
			t.Errorf("Open(%s) succeeded", c.path)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%s): %v, want it to say %q", c.path, err, c.want)
		}
	}
}

func TestLinks(t *testing.T) {
	s := serve(t)
	tr, err := Open(s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if ids, err := tr.Links(); err != nil || len(ids) != 0 {
		t.Fatalf("Links() = %v, %v; want none", ids, err)
	}
	var clients []*client.Client
	for i := 0; i < 2; i++ {
		c, err := client.Dial(s.path, "tree test")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	// A client has its answer a moment before its link is listed (the
	// answer is written while the join is admitted).
	var ids []uint64
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		ids, err = tr.Links()
		if err == nil && len(ids) == 2 || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || !reflect.DeepEqual(ids, []uint64{1, 2}) {
		t.Fatalf("Links() = %v, %v; want [1 2]", ids, err)
	}
	st, err := tr.Link(2)
	if err != nil {
		t.Fatal(err)
	}
	if pid, ok := st.Uint("pid"); !ok || pid != uint64(os.Getpid()) {
		t.Errorf("link 2's pid = %q, want %d", st["pid"], os.Getpid())
	}
	if st["description"] != "tree test" {
		t.Errorf("link 2's description = %q", st["description"])
	}
	if err := tr.CloseLink(1); err != nil {
		t.Fatalf("CloseLink(1): %v", err)
	}
	select {
	case <-clients[0].Done():
	case <-time.After(2 * time.Second):
		t.Error("link 1's client saw no EOF after CloseLink")
	}
	if _, err := tr.Link(1); !errors.Is(err, ErrNoLink) {
		t.Errorf("Link(1) after its close: %v, want ErrNoLink", err)
	}
	if err := tr.CloseLink(1); !errors.Is(err, ErrNoLink) {
		t.Errorf("CloseLink(1) again: %v, want ErrNoLink", err)
	}
	if _, err := tr.Link(7); !errors.Is(err, ErrNoLink) {
		t.Errorf("Link(7), never open: %v, want ErrNoLink", err)
	}
	if ids, err := tr.Links(); err != nil || !reflect.DeepEqual(ids, []uint64{2}) {
		t.Errorf("Links() after closing 1 = %v, %v; want [2]", ids, err)
	}
}

// TestHeldNotPath: the tree goes on reading the mount it proved, not
// whatever PATH names later (a parent renamed away and a plain directory
// put in its place, as whoever can write the parent can do).
func TestHeldNotPath(t *testing.T) {
	s := serve(t)
	tr, err := Open(s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	parent := filepath.Dir(s.path)
	elsewhere := parent + ".elsewhere"
	if err := os.Rename(parent, elsewhere); err != nil {
		t.Fatalf("renaming the mount's parent: %v", err)
	}
	// Run last first: the decoy goes, then the real parent comes back,
	// before the cleanups unmount by path.
	defer os.Rename(elsewhere, parent)
	if err := os.MkdirAll(s.path, 0o700); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(parent)
	if _, err := Open(s.path); err == nil {
		t.Error("Open(PATH) of the decoy succeeded")
	}
	st, err := tr.Root()
	if err != nil {
		t.Fatalf("Root() through the held descriptor after PATH was replaced: %v", err)
	}
	if _, ok := st["links_total"]; !ok {
		t.Errorf("root stats read through the held descriptor lack links_total: %v", st)
	}
}

// TestOpenUntrusted: Open refuses a multifs look-alike whose mount says
// user_id 4242 (neither root nor us), naming that user, and writes it
// nothing.
func TestOpenUntrusted(t *testing.T) {
	const other = 4242
	if os.Geteuid() == other {
		t.Skip("running as uid 4242")
	}
	f := mountFake(t, other)
	tr, err := Open(f.Path)
	if err == nil {
		tr.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "uid 4242") {
		t.Errorf("Open(an impostor of uid 4242): %v", err)
	}
	if n := f.Writes(); n != 0 {
		t.Errorf("the impostor got %d writes", n)
	}
	if n := f.Requests(); n != 0 {
		t.Errorf("the impostor got %d requests", n)
	}
}
