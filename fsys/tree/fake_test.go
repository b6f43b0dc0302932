package tree

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fake is a look-alike multifs tree of the test's own: stats, links/1/stats
// and links/1/close. Its requests are counted; while hang is set, every
// request but the mount's own blocks until release, ignoring the kernel's
// interrupts, as a stuck or hostile server does.
type fake struct {
	path     string
	requests atomic.Int64
	hang     atomic.Bool
	writes   atomic.Int64
	release  chan struct{}
	once     sync.Once
}

type fakeNode struct {
	fs.Inode
	f    *fake
	name string // "", "links", "1", "stats", "close"
	dir  bool
	link bool // below links/1
}

func (n *fakeNode) enter() {
	n.f.requests.Add(1)
	if n.f.hang.Load() {
		<-n.f.release
	}
}

func (n *fakeNode) children() []string {
	switch n.name {
	case "":
		return []string{"stats", "links"}
	case "links":
		return []string{"1"}
	case "1":
		return []string{"stats", "close"}
	}
	return nil
}

func (n *fakeNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.enter()
	out.Mode = fuse.S_IFREG | 0o644
	if n.dir {
		out.Mode = fuse.S_IFDIR | 0o755
	}
	out.Size = 4096
	out.SetTimeout(0)
	return 0
}

func (n *fakeNode) Opendir(ctx context.Context) syscall.Errno { n.enter(); return 0 }

func (n *fakeNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	n.enter()
	var es []fuse.DirEntry
	for _, c := range n.children() {
		es = append(es, fuse.DirEntry{Name: c, Mode: fuse.S_IFDIR})
	}
	return fs.NewListDirStream(es), 0
}

func (n *fakeNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.enter()
	out.SetEntryTimeout(0)
	out.SetAttrTimeout(0)
	for _, c := range n.children() {
		if c == name {
			dir := name == "links" || name == "1"
			mode := uint32(fuse.S_IFREG)
			if dir {
				mode = fuse.S_IFDIR
			}
			return n.NewInode(ctx, &fakeNode{f: n.f, name: name, dir: dir, link: n.name == "1"}, fs.StableAttr{Mode: mode}), 0
		}
	}
	return nil, syscall.ENOENT
}

func (n *fakeNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	n.enter()
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (n *fakeNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.enter()
	text := "links: 1\nlinks_total: 1\nhost: none\n"
	if n.link {
		text = "id: 1\npid: 4242\nrx_packets: 0\n"
	}
	if off >= int64(len(text)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData([]byte(text[off:])), 0
}

func (n *fakeNode) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	n.enter()
	n.f.writes.Add(1)
	return uint32(len(data)), 0
}

func (n *fakeNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return n.Getattr(ctx, fh, out)
}

// mountFake mounts a fake whose mount options say user_id=owner (root
// mounts it itself: the kernel takes the last user_id given).
func mountFake(t *testing.T, owner uint32) *fake {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a FUSE server with another user_id needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse on this machine")
	}
	f := &fake{path: filepath.Join(t.TempDir(), "fake"), release: make(chan struct{})}
	if err := os.Mkdir(f.path, 0o755); err != nil {
		t.Fatal(err)
	}
	srv, err := fs.Mount(f.path, &fakeNode{f: f, dir: true}, &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName: "multifs", Name: "multifs", AllowOther: true, DirectMountStrict: true,
			Options: []string{"user_id=" + strconv.FormatUint(uint64(owner), 10)},
		},
	})
	if err != nil {
		t.Fatalf("mounting the fake: %v", err)
	}
	t.Cleanup(func() {
		f.unblock()
		if err := srv.Unmount(); err != nil {
			syscall.Unmount(f.path, syscall.MNT_DETACH)
		}
	})
	return f
}

func (f *fake) unblock() {
	f.hang.Store(false)
	f.once.Do(func() { close(f.release) })
}
