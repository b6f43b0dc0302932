// Command fakemfs is a look-alike of a multifs control directory for the
// tests of `multifs handoff` (test/t_handoff_trust.sh): a FUSE server of
// the test's own that mounts with fsname and subtype multifs, so that its
// line in mountinfo reads like a real multifs's (type fuse.multifs), and
// serves the tree handoff reads:
//
//	stats                 links, links_total and host, as a root stats has
//	links/N/stats         id, pid, rx_packets
//	links/N/close         writes logged, never acted on
//
// It stands for two peers a real multifs never is. Run by another user, it
// is the impostor handoff must refuse (it would log root's close writes).
// Run by root, it is a mount that stops answering: after -hang-after reads
// of the new link's stats every read blocks for good, ignoring the
// kernel's interrupts, as a stuck or hostile server would.
//
// Every open, read and write is logged, one line each, to -log.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

var (
	mountDir  = flag.String("mount", "", "the directory to mount on")
	logPath   = flag.String("log", "", "where every open, read and write is logged")
	readyPath = flag.String("ready", "", "a file made once the mount is up")
	links     = flag.String("links", "1", "the links always open, comma-separated")
	newPID    = flag.String("newpid", "", "a file: once it holds a pid, link 2 is open with that pid")
	rx        = flag.Uint64("rx", 0, "link 2's rx_packets")
	hangAfter = flag.Int("hang-after", 0, "after this many reads of link 2's stats, every read hangs (0: never)")
	hangAll   = flag.Bool("hang-all", false, "every request but the mount's own hangs: lookups, getattr, opens, reads")
)

type server struct {
	mu       sync.Mutex
	log      *os.File
	static   []uint64
	newReads int
	hang     chan struct{} // never closed
}

func (s *server) logf(format string, a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.log, format+"\n", a...)
}

// stall blocks for good under -hang-all, ignoring the kernel's interrupts.
func (s *server) stall(what string) {
	if *hangAll {
		s.logf("hang %s", what)
		<-s.hang
	}
}

// newLink is link 2's pid, 0 while the -newpid file holds none.
func (s *server) newLink() uint64 {
	if *newPID == "" {
		return 0
	}
	b, err := os.ReadFile(*newPID)
	if err != nil {
		return 0
	}
	pid, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0
	}
	return pid
}

// open lists the open links: the static ones, and 2 once it has a pid.
func (s *server) open() map[uint64]uint64 {
	m := map[uint64]uint64{}
	for _, id := range s.static {
		m[id] = 4242
	}
	if pid := s.newLink(); pid != 0 {
		m[2] = pid
	}
	return m
}

// dir is a directory: the root, links/, or links/N.
type dir struct {
	fs.Inode
	s    *server
	kind string // "root", "links", "link"
	id   uint64
}

// file is a stats or close file.
type file struct {
	fs.Inode
	s    *server
	path string
	id   uint64 // 0: the root stats
}

var (
	_ fs.NodeLookuper  = (*dir)(nil)
	_ fs.NodeReaddirer = (*dir)(nil)
	_ fs.NodeGetattrer = (*dir)(nil)
	_ fs.NodeOpendirer = (*dir)(nil)
	_ fs.NodeStatfser  = (*dir)(nil)
	_ fs.NodeOpener    = (*file)(nil)
	_ fs.NodeReader    = (*file)(nil)
	_ fs.NodeWriter    = (*file)(nil)
	_ fs.NodeGetattrer = (*file)(nil)
	_ fs.NodeSetattrer = (*file)(nil)
)

func (d *dir) names() []string {
	switch d.kind {
	case "root":
		return []string{"links", "stats"}
	case "links":
		var out []string
		for id := range d.s.open() {
			out = append(out, strconv.FormatUint(id, 10))
		}
		return out
	}
	return []string{"close", "stats"}
}

func (d *dir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.s.stall("getattr " + d.kind)
	out.Mode = fuse.S_IFDIR | 0755
	out.SetTimeout(0)
	return 0
}

func (d *dir) Opendir(ctx context.Context) syscall.Errno {
	d.s.stall("opendir " + d.kind)
	return 0
}

func (d *dir) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	d.s.stall("statfs")
	return 0
}

func (d *dir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	d.s.stall("readdir " + d.kind)
	var es []fuse.DirEntry
	for _, n := range d.names() {
		mode := uint32(fuse.S_IFREG)
		if d.kind != "link" && n != "stats" {
			mode = fuse.S_IFDIR
		}
		es = append(es, fuse.DirEntry{Name: n, Mode: mode})
	}
	return fs.NewListDirStream(es), 0
}

func (d *dir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	d.s.stall("lookup " + name)
	out.SetEntryTimeout(0)
	out.SetAttrTimeout(0)
	switch {
	case d.kind == "root" && name == "links":
		return d.NewInode(ctx, &dir{s: d.s, kind: "links"}, fs.StableAttr{Mode: fuse.S_IFDIR}), 0
	case d.kind == "root" && name == "stats":
		return d.NewInode(ctx, &file{s: d.s, path: "stats"}, fs.StableAttr{Mode: fuse.S_IFREG}), 0
	case d.kind == "links":
		id, err := strconv.ParseUint(name, 10, 64)
		if _, ok := d.s.open()[id]; err != nil || !ok {
			return nil, syscall.ENOENT
		}
		return d.NewInode(ctx, &dir{s: d.s, kind: "link", id: id}, fs.StableAttr{Mode: fuse.S_IFDIR}), 0
	case d.kind == "link" && (name == "stats" || name == "close"):
		if _, ok := d.s.open()[d.id]; !ok {
			return nil, syscall.ENOENT
		}
		p := "links/" + strconv.FormatUint(d.id, 10) + "/" + name
		return d.NewInode(ctx, &file{s: d.s, path: p, id: d.id}, fs.StableAttr{Mode: fuse.S_IFREG}), 0
	}
	return nil, syscall.ENOENT
}

func (f *file) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.s.stall("getattr " + f.path)
	out.Mode = fuse.S_IFREG | 0644
	out.Size = 4096
	out.SetTimeout(0)
	return 0
}

// Setattr takes the truncation of an O_TRUNC open.
func (f *file) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.Getattr(ctx, fh, out)
}

func (f *file) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	f.s.logf("open %s flags=%#x", f.path, flags)
	f.s.stall("open " + f.path)
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *file) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	s := f.s
	s.stall("read " + f.path)
	s.mu.Lock()
	hang := *hangAfter > 0 && s.newReads >= *hangAfter
	if f.id == 2 && strings.HasSuffix(f.path, "/stats") && off == 0 {
		s.newReads++
	}
	s.mu.Unlock()
	if hang {
		s.logf("hang %s", f.path)
		<-s.hang // ctx (the kernel's interrupt) ignored on purpose
	}
	s.logf("read %s off=%d", f.path, off)
	var text string
	switch {
	case f.id == 0:
		n := len(s.open())
		text = fmt.Sprintf("links: %d\nlinks_total: %d\nhost: none\n", n, n)
	case strings.HasSuffix(f.path, "/stats"):
		pid, ok := s.open()[f.id]
		if !ok {
			return nil, syscall.ENOENT
		}
		var r uint64
		if f.id == 2 {
			r = *rx
		}
		text = fmt.Sprintf("id: %d\npid: %d\nrx_packets: %d\n", f.id, pid, r)
	default:
		return nil, syscall.EACCES
	}
	if off >= int64(len(text)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData([]byte(text[off:])), 0
}

func (f *file) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	f.s.logf("write %s %q", f.path, data)
	return uint32(len(data)), 0
}

func main() {
	flag.Parse()
	if *mountDir == "" || *logPath == "" {
		fmt.Fprintln(os.Stderr, "fakemfs: want -mount DIR -log FILE")
		os.Exit(2)
	}
	lf, err := os.OpenFile(*logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakemfs:", err)
		os.Exit(1)
	}
	s := &server{log: lf, hang: make(chan struct{})}
	for _, f := range strings.Split(*links, ",") {
		if id, err := strconv.ParseUint(f, 10, 64); err == nil {
			s.static = append(s.static, id)
		}
	}
	root := &dir{s: s, kind: "root"}
	srv, err := fs.Mount(*mountDir, root, &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:     "multifs",
			Name:       "multifs",
			AllowOther: true,
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakemfs: mount:", err)
		os.Exit(1)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		// No unmount: a read may be hanging. Exiting closes /dev/fuse, which
		// fails every request still waiting; the test unmounts.
		os.Exit(0)
	}()
	if *readyPath != "" {
		os.WriteFile(*readyPath, []byte("ready\n"), 0644)
	}
	srv.Wait()
}
