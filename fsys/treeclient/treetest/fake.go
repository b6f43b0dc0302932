// Package treetest is a look-alike of a multifs control directory, for
// tests of the programs that read one from the outside (package treeclient,
// multifs handoff): a FUSE server that mounts with fsname and subtype
// multifs, so that its line in mountinfo reads like a real multifs's (type
// fuse.multifs), and serves the tree they read:
//
//	stats                 links, links_total and host, as a root stats has
//	links/N/stats         id, pid, rx_packets
//	links/N/close         writes counted and logged, never acted on
//
// It stands for the peers a real multifs never is: one mounted by another
// user (Options.Owner, or test/fakemfs run as that user), to be refused,
// and one that stops answering (Options.HangAfter, HangAll, Fake.Hang),
// blocking requests for good and ignoring the kernel's interrupts, as a
// stuck or hostile server does. Every request it serves is counted, and
// opens, reads and writes are logged one line each.
//
// Never imported by the daemon or by multifs handoff: tests, and
// test/fakemfs, only.
package treetest

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Options shape a Fake.
type Options struct {
	Links      []uint64 // always open, with pid 4242
	NewPIDFile string   // once this file holds a pid, link 2 is open with that pid
	RX         uint64   // link 2's rx_packets
	HangAfter  int      // after this many reads of link 2's stats, every read blocks (0: never)
	HangAll    bool     // every request blocks from the start
	AllowOther bool     // let others in (an ordinary user's needs user_allow_other)
	// Owner, if set, is the user_id the mount says, whoever mounts it:
	// root mounts it itself then (the kernel takes the last user_id).
	Owner *uint32
	Log   io.Writer // one line per open, read, write and hang; nil: none
}

// Fake is a mounted look-alike.
type Fake struct {
	Path     string
	o        Options
	srv      *fuse.Server
	requests atomic.Int64
	writes   atomic.Int64
	blocked  atomic.Int64
	hang     atomic.Bool
	mu       sync.Mutex
	newReads int           // reads of link 2's stats
	closed   []uint64      // the links whose close was written, in order
	release  chan struct{} // closed by Unblock
	once     sync.Once
}

// Mount mounts a Fake on dir.
func Mount(dir string, o Options) (*Fake, error) {
	f := &Fake{Path: dir, o: o, release: make(chan struct{})}
	f.hang.Store(o.HangAll)
	mo := fuse.MountOptions{FsName: "multifs", Name: "multifs", AllowOther: o.AllowOther}
	if o.Owner != nil {
		mo.DirectMountStrict = true
		mo.Options = []string{"user_id=" + strconv.FormatUint(uint64(*o.Owner), 10)}
	}
	srv, err := fs.Mount(dir, &node{f: f, kind: kindRoot}, &fs.Options{MountOptions: mo})
	if err != nil {
		// go-fuse checks the mount once made (a mount of another user_id
		// without AllowOther fails that check): leave none behind.
		syscall.Unmount(dir, syscall.MNT_DETACH)
		return nil, err
	}
	f.srv = srv
	return f, nil
}

// Requests is how many requests it has served (or is blocking), the
// mount's own aside.
func (f *Fake) Requests() int64 { return f.requests.Load() }

// Writes is how many writes it got.
func (f *Fake) Writes() int64 { return f.writes.Load() }

// Closed lists the links whose close file was written, in order.
func (f *Fake) Closed() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint64(nil), f.closed...)
}

// Blocked is how many requests it has blocked so far.
func (f *Fake) Blocked() int64 { return f.blocked.Load() }

// Hang makes every request from now on block, until Unblock.
func (f *Fake) Hang() { f.hang.Store(true) }

// Unblock answers every blocked request and stops blocking, for good.
func (f *Fake) Unblock() {
	f.hang.Store(false)
	f.mu.Lock()
	f.o.HangAfter = 0
	f.mu.Unlock()
	f.once.Do(func() { close(f.release) })
}

// Wait returns once it is unmounted.
func (f *Fake) Wait() { f.srv.Wait() }

// Unmount unblocks it and unmounts it (lazily if it is busy).
func (f *Fake) Unmount() error {
	f.Unblock()
	if err := f.srv.Unmount(); err != nil {
		return syscall.Unmount(f.Path, syscall.MNT_DETACH)
	}
	return nil
}

func (f *Fake) logf(format string, a ...any) {
	if f.o.Log == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fmt.Fprintf(f.o.Log, format+"\n", a...)
}

// enter counts a request and blocks while the fake hangs.
func (f *Fake) enter(what string) {
	f.requests.Add(1)
	if f.hang.Load() {
		f.block(what)
	}
}

// block waits for Unblock, whatever the kernel says meanwhile (its
// interrupt cancels the request's context: ignored on purpose).
func (f *Fake) block(what string) {
	f.blocked.Add(1)
	f.logf("hang %s", what)
	<-f.release
}

// newPID is link 2's pid, 0 while the NewPIDFile holds none.
func (f *Fake) newPID() uint64 {
	if f.o.NewPIDFile == "" {
		return 0
	}
	b, err := os.ReadFile(f.o.NewPIDFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0
	}
	return pid
}

// open maps the open links to their pids.
func (f *Fake) open() map[uint64]uint64 {
	m := map[uint64]uint64{}
	for _, id := range f.o.Links {
		m[id] = 4242
	}
	if pid := f.newPID(); pid != 0 {
		m[2] = pid
	}
	return m
}

type kind int

const (
	kindRoot  kind = iota // the root directory
	kindLinks             // links/
	kindLink              // links/N
	kindStats             // stats, links/N/stats
	kindClose             // links/N/close
)

// node is any node of the tree; id is the link's, 0 for the root stats.
type node struct {
	fs.Inode
	f    *Fake
	kind kind
	id   uint64
}

var (
	_ fs.NodeLookuper  = (*node)(nil)
	_ fs.NodeReaddirer = (*node)(nil)
	_ fs.NodeOpendirer = (*node)(nil)
	_ fs.NodeGetattrer = (*node)(nil)
	_ fs.NodeSetattrer = (*node)(nil)
	_ fs.NodeStatfser  = (*node)(nil)
	_ fs.NodeOpener    = (*node)(nil)
	_ fs.NodeReader    = (*node)(nil)
	_ fs.NodeWriter    = (*node)(nil)
)

func (n *node) path() string {
	switch n.kind {
	case kindRoot:
		return "."
	case kindLinks:
		return "links"
	case kindLink:
		return "links/" + strconv.FormatUint(n.id, 10)
	case kindStats:
		if n.id == 0 {
			return "stats"
		}
		return "links/" + strconv.FormatUint(n.id, 10) + "/stats"
	}
	return "links/" + strconv.FormatUint(n.id, 10) + "/close"
}

func (n *node) isDir() bool { return n.kind <= kindLink }

func (n *node) children() []*node {
	switch n.kind {
	case kindRoot:
		return []*node{{f: n.f, kind: kindStats}, {f: n.f, kind: kindLinks}}
	case kindLinks:
		var out []*node
		for id := range n.f.open() {
			out = append(out, &node{f: n.f, kind: kindLink, id: id})
		}
		return out
	case kindLink:
		return []*node{{f: n.f, kind: kindStats, id: n.id}, {f: n.f, kind: kindClose, id: n.id}}
	}
	return nil
}

func (n *node) name() string {
	switch n.kind {
	case kindLinks:
		return "links"
	case kindLink:
		return strconv.FormatUint(n.id, 10)
	case kindStats:
		return "stats"
	case kindClose:
		return "close"
	}
	return ""
}

func (n *node) mode() uint32 {
	if n.isDir() {
		return fuse.S_IFDIR
	}
	return fuse.S_IFREG
}

func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.f.enter("getattr " + n.path())
	out.Mode = n.mode() | 0o644
	if n.isDir() {
		out.Mode |= 0o111
	} else {
		out.Size = 4096
	}
	out.SetTimeout(0)
	return 0
}

// Setattr takes the truncation of an O_TRUNC open.
func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return n.Getattr(ctx, fh, out)
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	n.f.enter("statfs")
	return 0
}

func (n *node) Opendir(ctx context.Context) syscall.Errno {
	n.f.enter("opendir " + n.path())
	return 0
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	n.f.enter("readdir " + n.path())
	var es []fuse.DirEntry
	for _, c := range n.children() {
		es = append(es, fuse.DirEntry{Name: c.name(), Mode: c.mode()})
	}
	return fs.NewListDirStream(es), 0
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.f.enter("lookup " + n.path() + "/" + name)
	out.SetEntryTimeout(0)
	out.SetAttrTimeout(0)
	for _, c := range n.children() {
		if c.name() == name {
			return n.NewInode(ctx, c, fs.StableAttr{Mode: c.mode()}), 0
		}
	}
	return nil, syscall.ENOENT
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	n.f.logf("open %s flags=%#x", n.path(), flags)
	n.f.enter("open " + n.path())
	if n.id != 0 {
		if _, ok := n.f.open()[n.id]; !ok {
			return nil, 0, syscall.ENOENT
		}
	}
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (n *node) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f := n.f
	f.enter("read " + n.path())
	f.mu.Lock()
	hang := f.o.HangAfter > 0 && f.newReads >= f.o.HangAfter
	if n.kind == kindStats && n.id == 2 && off == 0 {
		f.newReads++
	}
	f.mu.Unlock()
	if hang {
		f.block("read " + n.path())
	}
	f.logf("read %s off=%d", n.path(), off)
	var text string
	switch {
	case n.kind != kindStats:
		return nil, syscall.EACCES
	case n.id == 0:
		k := len(f.open())
		text = fmt.Sprintf("links: %d\nlinks_total: %d\nhost: none\n", k, k)
	default:
		pid, ok := f.open()[n.id]
		if !ok {
			return nil, syscall.ENOENT
		}
		var rx uint64
		if n.id == 2 {
			rx = f.o.RX
		}
		text = fmt.Sprintf("id: %d\npid: %d\nrx_packets: %d\n", n.id, pid, rx)
	}
	if off >= int64(len(text)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData([]byte(text[off:])), 0
}

func (n *node) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	n.f.enter("write " + n.path())
	n.f.writes.Add(1)
	if n.kind == kindClose {
		n.f.mu.Lock()
		n.f.closed = append(n.f.closed, n.id)
		n.f.mu.Unlock()
	}
	n.f.logf("write %s %q", n.path(), data)
	return uint32(len(data)), 0
}
