package treeclient

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"multifs/control/client"
	"multifs/fsys/treeclient/treetest"
)

// mountFake mounts a look-alike multifs whose mount says user_id=owner
// (root mounts it itself: the kernel takes the last user_id given),
// unmounted at the test's end.
func mountFake(t *testing.T, owner uint32) *treetest.Fake {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a FUSE server with another user_id needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse on this machine")
	}
	dir := filepath.Join(t.TempDir(), "fake")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := treetest.Mount(dir, treetest.Options{Links: []uint64{1}, AllowOther: true, Owner: &owner})
	if err != nil {
		t.Fatalf("mounting the fake: %v", err)
	}
	t.Cleanup(func() { f.Unmount() })
	return f
}

// TestMain lets this test binary be a tree reader: a Client starts one by
// re-executing /proc/self/exe, which is this binary here.
func TestMain(m *testing.M) {
	if IsReader() {
		os.Exit(ServeReader())
	}
	// The readers' exit need not sleep (race-enabled binaries do, 1 s).
	os.Setenv("GORACE", "atexit_sleep_ms=0")
	os.Exit(m.Run())
}

func bg(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	_ = cancel // ends with the test; the timer is cheap
	return ctx
}

// TestClient: a Client reads and closes what a Tree does, through its
// reader, and refuses what Open refuses, with the same words.
func TestClient(t *testing.T) {
	s := serve(t)
	c, err := Start(bg(5*time.Second), s.path)
	if err != nil {
		t.Fatalf("Start(the mount): %v", err)
	}
	defer c.Close()
	if c.Owner != uint32(os.Geteuid()) && c.Owner != 0 {
		t.Errorf("Owner = %d", c.Owner)
	}
	st, err := c.Root(bg(5 * time.Second))
	if err != nil || st["host"] != "detached" {
		t.Fatalf("Root() = %v, %v", st, err)
	}
	cl, err := client.Dial(s.path, "client test")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var ids []uint64
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		ids, err = c.Links(bg(5 * time.Second))
		if err == nil && len(ids) == 1 || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || !reflect.DeepEqual(ids, []uint64{1}) {
		t.Fatalf("Links() = %v, %v; want [1]", ids, err)
	}
	if st, err := c.Link(bg(5*time.Second), 1); err != nil || st["description"] != "client test" {
		t.Fatalf("Link(1) = %v, %v", st, err)
	}
	if err := c.CloseLink(bg(5*time.Second), 1); err != nil {
		t.Fatalf("CloseLink(1): %v", err)
	}
	if _, err := c.Link(bg(5*time.Second), 1); !errors.Is(err, ErrNoLink) {
		t.Errorf("Link(1) after its close: %v, want ErrNoLink", err)
	}
	if err := c.CloseLink(bg(5*time.Second), 1); !errors.Is(err, ErrNoLink) {
		t.Errorf("CloseLink(1) again: %v, want ErrNoLink", err)
	}

	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(s.path, link); err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o600)
	for _, cs := range []struct{ path, want string }{
		{t.TempDir(), "not FUSE"},
		{filepath.Join(s.path, "links"), "inside a FUSE mount"},
		{link, "symbolic link"},
		{notDir, "not a directory"},
		{filepath.Join(t.TempDir(), "absent"), "no such file"},
	} {
		c, err := Start(bg(5*time.Second), cs.path)
		if err == nil {
			c.Close()
			t.Errorf("Start(%s) succeeded", cs.path)
			continue
		}
		if !strings.Contains(err.Error(), cs.want) {
			t.Errorf("Start(%s): %v, want it to say %q", cs.path, err, cs.want)
		}
	}
}

// TestUntrusted: a multifs look-alike mounted with another user's user_id
// is refused by Open and by Start, naming that user, without a single
// request to its server: even one that answers nothing refuses at once.
func TestUntrusted(t *testing.T) {
	const other = 4242 // neither root nor us
	if os.Geteuid() == other {
		t.Skip("running as uid 4242")
	}
	f := mountFake(t, other)
	f.Hang()
	t0 := time.Now()
	_, err := Open(f.Path)
	var ue *UntrustedError
	if !errors.As(err, &ue) || ue.Owner != other || !strings.Contains(err.Error(), "uid 4242") {
		t.Errorf("Open(an impostor of uid 4242): %v", err)
	}
	c, err := Start(bg(10*time.Second), f.Path)
	if err == nil {
		c.Close()
	}
	if !errors.As(err, &ue) || ue.Owner != other {
		t.Errorf("Start(an impostor of uid 4242): %v", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("refusing took %v", d)
	}
	if n := f.Requests(); n != 0 {
		t.Errorf("the impostor got %d requests", n)
	}
	if n := f.Writes(); n != 0 {
		t.Errorf("the impostor got %d writes", n)
	}
}

// TestNoAnswer: a trusted mount that stops answering: each request ends at
// its context's deadline with a NoAnswerError, though the reader is stuck
// in the mount for good; the next request, once the mount answers again,
// is made by a new reader on the same descriptor.
func TestNoAnswer(t *testing.T) {
	f := mountFake(t, uint32(os.Geteuid()))
	c, err := Start(bg(10*time.Second), f.Path)
	if err != nil {
		t.Fatalf("Start(a trusted look-alike): %v", err)
	}
	defer c.Close()
	if _, err := c.Link(bg(5*time.Second), 1); err != nil {
		t.Fatalf("Link(1): %v", err)
	}
	f.Hang()
	for _, call := range []struct {
		what string
		do   func(context.Context) error
	}{
		{"reading links/1/stats", func(ctx context.Context) error { _, err := c.Link(ctx, 1); return err }},
		{"listing links", func(ctx context.Context) error { _, err := c.Links(ctx); return err }},
		{"writing links/1/close", func(ctx context.Context) error { return c.CloseLink(ctx, 1) }},
	} {
		t0 := time.Now()
		err := call.do(bg(300 * time.Millisecond))
		d := time.Since(t0)
		var na *NoAnswerError
		if !errors.As(err, &na) || na.What != call.what {
			t.Errorf("%s on a stuck mount: %v, want a NoAnswerError", call.what, err)
		}
		if d < 250*time.Millisecond || d > 2*time.Second {
			t.Errorf("%s on a stuck mount returned after %v, want about 300ms", call.what, d)
		}
	}
	// A signal (a cancelled context) ends a request just the same, with
	// its own reason.
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(200*time.Millisecond, func() { cancel(errors.New("interrupted by SIGTERM")) })
	if _, err := c.Root(ctx); err == nil || err.Error() != "interrupted by SIGTERM" {
		t.Errorf("Root() cancelled: %v", err)
	}
	if f.Writes() != 0 {
		t.Errorf("%d writes reached the fake while it hung", f.Writes())
	}
	f.Unblock()
	if st, err := c.Link(bg(5*time.Second), 1); err != nil || st["id"] != "1" {
		t.Errorf("Link(1) once the mount answers again: %v, %v", st, err)
	}
}
