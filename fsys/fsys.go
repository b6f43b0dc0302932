// Package fsys is the FUSE control directory of a multilink.
//
// The tree, and what each path does:
//
//	PATH/                 dir (dirmode)         the multilink
//	PATH/ctl              symlink               -> SOCKDIR/ctl: links join here (vde-2)
//	PATH/seqpacket        symlink               -> SOCKDIR/seqpacket: links join here (SOCK_SEQPACKET)
//	PATH/stats            file (r bits of mode) totals: links, links_total, host, drops, dup_dropped
//	PATH/host/            dir (dirmode)         the host's attachment point
//	PATH/host/ctl         symlink               -> SOCKDIR/host.ctl: the host joins here
//	PATH/host/seqpacket   symlink               -> SOCKDIR/host.seqpacket: or here
//	PATH/host/vhost-user  symlink               -> SOCKDIR/host.vhost-user: or a vhost-user frontend here
//	PATH/host/stats       file                  attached: yes|no, then the host's stats
//	PATH/links/           dir (dirmode)         one directory per open link
//	PATH/links/N/         dir (dirmode)         link N (decimal id, never reused)
//	PATH/links/N/stats    file                  the link's identity and counters
//	PATH/links/N/close    file (w bits of mode) write "1" to close link N
//
// # Caching
//
// links/ changes under the kernel's feet, so the whole tree is mounted with
// zero entry and attribute timeouts, and links/ is dynamic (Lookup and
// Readdir ask the multilink each time). The kernel therefore never holds a
// stale entry: right after a join or a close, `ls links` and `stat links/N`
// tell the truth, and no notification (with its deadlock hazards) is needed.
// Lookups are cheap: a map access under a short lock.
//
// Stats files change at every read, so they are opened with FOPEN_DIRECT_IO
// and rendered afresh by each read at offset 0; later offsets of the same
// open file read the same rendering, so `cat` never sees a torn text.
//
// # Control writes
//
// links/N/close accepts exactly "1", with or without a newline, in one
// write at offset 0, and closes the link before the write returns. Anything
// else gets EINVAL and closes nothing; the reason is logged. `echo 1 >`
// truncates first, so SETATTR(size=0) on close succeeds and does nothing.
//
// # Permissions
//
// Every node belongs to the daemon's user and to grp; the kernel enforces
// the modes (default_permissions). Since root passes those checks, opens are
// also checked against what a file is for: stats is read-only, close is
// write-only. Nothing in the tree can be created, removed, renamed, linked,
// chmod-ed or chown-ed: those get EPERM.
//
// # Inode numbers
//
// Fixed for the static nodes, and derived from the link id for link nodes;
// link ids are never reused, so neither are inode numbers.
package fsys

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"multifs/multilink"
	"multifs/multilink/peertext"
	"multifs/perms"
)

// Config is what the tree shows.
type Config struct {
	Multilink *multilink.Multilink
	Perms     perms.Perms
	LinkCtl   string // target of PATH/ctl
	HostCtl   string // target of PATH/host/ctl
	LinkSeq   string // target of PATH/seqpacket
	HostSeq   string // target of PATH/host/seqpacket
	HostVhost string // target of PATH/host/vhost-user
	Log       *logrus.Entry

	FsName     string // the mount's source in /proc/mounts (default: the mountpoint)
	AllowOther bool   // let other users than the daemon's reach the tree (the modes still apply)
}

// Inode numbers of the static nodes; link nodes start above them.
const (
	inoRoot = 1 + iota
	inoCtl
	inoStats
	inoHost
	inoHostCtl
	inoHostStats
	inoLinks
	inoSeq
	inoHostSeq
	inoHostVhost
	inoFirstLink = 16
)

func linkIno(id uint64, which uint64) uint64 { return inoFirstLink + id*4 + which }

// tree is the state every node shares.
type tree struct {
	Config
	start time.Time
}

// Mount serves the tree at mountpoint and returns once it is live.
// mountpoint is a directory (go-fuse mounts it through fusermount3) or
// "/dev/fd/N", a /dev/fuse descriptor the caller mounted itself, as
// package mount does for a daemon running as root.
func Mount(mountpoint string, cfg Config) (*fuse.Server, error) {
	t := &tree{Config: cfg, start: time.Now()}
	fsName := cfg.FsName
	if fsName == "" {
		fsName = mountpoint
	}
	root := &rootDir{dir: dir{node: node{t: t}}}
	zero := time.Duration(0)
	opts := &fs.Options{
		EntryTimeout: &zero,
		AttrTimeout:  &zero,
		RootStableAttr: &fs.StableAttr{
			Mode: syscall.S_IFDIR,
			Ino:  inoRoot,
		},
		// A class of mode with no bits (mode=0220: others' 0) is shown as
		// 0, not replaced by go-fuse's default 0644/0755.
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			FsName:        fsName,
			Name:          "multifs",
			Options:       []string{"default_permissions"},
			AllowOther:    cfg.AllowOther,
			DisableXAttrs: true,
		},
	}
	return fs.Mount(mountpoint, root, opts)
}

// node is what every node in the tree has: attributes from the multilink's
// permissions, and a refusal of every change to the tree's shape.
type node struct {
	fs.Inode
	t *tree
}

func (n *node) fillAttr(out *fuse.Attr, mode uint32, size uint64, mtime time.Time) {
	out.Mode = mode
	out.Size = size
	out.Uid = n.t.Perms.UID
	out.Gid = n.t.Perms.GID
	out.Nlink = 1
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		out.Nlink = 2
	}
	out.SetTimes(nil, &mtime, &mtime)
	out.Ino = n.StableAttr().Ino
}

// Setattr refuses chmod, chown, truncate and utimes.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EPERM
}

var _ = (fs.NodeSetattrer)((*node)(nil))

// dir is a directory whose entries are multifs's alone.
type dir struct {
	node
}

var (
	_ = (fs.NodeMkdirer)((*dir)(nil))
	_ = (fs.NodeMknoder)((*dir)(nil))
	_ = (fs.NodeCreater)((*dir)(nil))
	_ = (fs.NodeSymlinker)((*dir)(nil))
	_ = (fs.NodeLinker)((*dir)(nil))
	_ = (fs.NodeUnlinker)((*dir)(nil))
	_ = (fs.NodeRmdirer)((*dir)(nil))
	_ = (fs.NodeRenamer)((*dir)(nil))
)

func (d *dir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fillAttr(&out.Attr, syscall.S_IFDIR|d.t.Perms.DirMode(), 0, d.t.start)
	return 0
}

// The refusals. Mknod matters beyond tidiness: a vde-2 client first tries to
// bind its own socket inside the directory it joins, and must fall back to
// /tmp rather than leave a socket in our tree.
func (d *dir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}
func (d *dir) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}
func (d *dir) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EPERM
}
func (d *dir) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}
func (d *dir) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}
func (d *dir) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }
func (d *dir) Rmdir(ctx context.Context, name string) syscall.Errno  { return syscall.EPERM }
func (d *dir) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return syscall.EPERM
}

// staticDir lists its persistent children in name order.
type staticDir struct {
	dir
}

func (d *staticDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return listChildren(d.EmbeddedInode()), 0
}

func listChildren(n *fs.Inode) fs.DirStream {
	children := n.Children()
	entries := make([]fuse.DirEntry, 0, len(children))
	for name, ch := range children {
		entries = append(entries, fuse.DirEntry{Name: name, Mode: ch.StableAttr().Mode, Ino: ch.StableAttr().Ino})
	}
	sortEntries(entries)
	return fs.NewListDirStream(entries)
}

// rootDir builds the static part of the tree when mounted.
type rootDir struct {
	dir
}

var _ = (fs.NodeOnAdder)((*rootDir)(nil))

func (r *rootDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return listChildren(r.EmbeddedInode()), 0
}

func (r *rootDir) OnAdd(ctx context.Context) {
	t := r.t
	add := func(parent *fs.Inode, name string, ops fs.InodeEmbedder, mode uint32, ino uint64) *fs.Inode {
		ch := parent.NewPersistentInode(ctx, ops, fs.StableAttr{Mode: mode, Ino: ino})
		parent.AddChild(name, ch, false)
		return ch
	}
	root := r.EmbeddedInode()
	add(root, "ctl", &symlink{node: node{t: t}, target: t.LinkCtl}, syscall.S_IFLNK, inoCtl)
	add(root, "seqpacket", &symlink{node: node{t: t}, target: t.LinkSeq}, syscall.S_IFLNK, inoSeq)
	add(root, "stats", &statsFile{node: node{t: t}, render: always(t.rootStats)}, syscall.S_IFREG, inoStats)
	host := add(root, "host", &staticDir{dir: dir{node: node{t: t}}}, syscall.S_IFDIR, inoHost)
	add(host, "ctl", &symlink{node: node{t: t}, target: t.HostCtl}, syscall.S_IFLNK, inoHostCtl)
	add(host, "seqpacket", &symlink{node: node{t: t}, target: t.HostSeq}, syscall.S_IFLNK, inoHostSeq)
	add(host, "vhost-user", &symlink{node: node{t: t}, target: t.HostVhost}, syscall.S_IFLNK, inoHostVhost)
	add(host, "stats", &statsFile{node: node{t: t}, render: always(t.hostStats)}, syscall.S_IFREG, inoHostStats)
	add(root, "links", &linksDir{dir: dir{node: node{t: t}}}, syscall.S_IFDIR, inoLinks)
}

func (t *tree) rootStats() string {
	tot := t.Multilink.Totals()
	host := "detached"
	if tot.HostAttached {
		host = "attached"
	}
	// goroutines and open_fds let churn tests and operators see that
	// nothing leaks; they cost a directory read, only when stats is read.
	fds := -1
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		fds = len(ents)
	}
	return fmt.Sprintf("links: %d\nlinks_total: %d\nhost: %s\nhosts_total: %d\ndropped_no_host: %d\ndropped_no_link: %d\ndup_dropped: %d\ngoroutines: %d\nopen_fds: %d\n",
		tot.Links, tot.LinksTotal, host, tot.HostsTotal, tot.DroppedNoHost, tot.DroppedNoLink, tot.DupDropped, runtime.NumGoroutine(), fds)
}

func (t *tree) hostStats() string {
	if h := t.Multilink.Host(); h != nil {
		return "attached: yes\n" + portStats(h, true)
	}
	return "attached: no\n"
}

// portStats renders a link's (or, isHost, the host's) stats file: its
// identity, then its counters. Every stats text of the tree is rendered
// here, in fsys; multilink only counts.
func portStats(p *multilink.Port, isHost bool) string {
	var b strings.Builder
	if !isHost {
		fmt.Fprintf(&b, "id: %d\n", p.ID)
	}
	c := p.Counters()
	fmt.Fprintf(&b, "transport: %s\n", p.Info.Transport)
	// The peer's own words: one line for every parser, splitlines() too.
	fmt.Fprintf(&b, "description: %s\n", peertext.Escape(p.Info.Description))
	fmt.Fprintf(&b, "pid: %d\nuid: %d\ngid: %d\n", p.Info.PID, p.Info.UID, p.Info.GID)
	fmt.Fprintf(&b, "since: %s\n", p.Info.Since.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "rx_packets: %d\nrx_bytes: %d\nrx_dropped: %d\n", c.RxPackets, c.RxBytes, c.RxDropped)
	fmt.Fprintf(&b, "tx_packets: %d\ntx_bytes: %d\ntx_dropped: %d\n", c.TxPackets, c.TxBytes, c.TxDropped)
	// A script tells a live path from a dead one by it, before it closes
	// anything.
	fmt.Fprintf(&b, "idle_ms: %d\n", p.Idle().Milliseconds())
	if !isHost {
		fmt.Fprintf(&b, "rx_dup_dropped: %d\n", c.RxDupDropped)
	}
	return b.String()
}

// symlink points into the socket directory, where the real sockets are.
type symlink struct {
	node
	target string
}

var _ = (fs.NodeReadlinker)((*symlink)(nil))

func (s *symlink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	return []byte(s.target), 0
}

func (s *symlink) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	s.fillAttr(&out.Attr, syscall.S_IFLNK|0o777, uint64(len(s.target)), s.t.start)
	return 0
}

// linksDir lists the open links, asking the multilink at every call.
type linksDir struct {
	dir
}

var (
	_ = (fs.NodeLookuper)((*linksDir)(nil))
	_ = (fs.NodeReaddirer)((*linksDir)(nil))
)

func (d *linksDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	links := d.t.Multilink.Links() // ordered by id
	entries := make([]fuse.DirEntry, len(links))
	for i, p := range links {
		entries[i] = fuse.DirEntry{Name: p.IDString(), Mode: syscall.S_IFDIR, Ino: linkIno(p.ID, 0)}
	}
	return fs.NewListDirStream(entries), 0
}

func (d *linksDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	id, err := strconv.ParseUint(name, 10, 64)
	if err != nil || strconv.FormatUint(id, 10) != name {
		return nil, syscall.ENOENT
	}
	p := d.t.Multilink.Link(id)
	if p == nil {
		return nil, syscall.ENOENT
	}
	ld := &linkDir{dir: dir{node: node{t: d.t}}, id: id, since: p.Info.Since}
	ld.fillAttr(&out.Attr, syscall.S_IFDIR|d.t.Perms.DirMode(), 0, p.Info.Since)
	return d.NewInode(ctx, ld, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: linkIno(id, 0)}), 0
}

// linkDir is one link: stats and close. It keeps the link's id, not the
// link: the kernel may hold on to the node long after the link is gone,
// and must not keep the link's buffers alive with it.
type linkDir struct {
	dir
	id    uint64
	since time.Time
}

var (
	_ = (fs.NodeLookuper)((*linkDir)(nil))
	_ = (fs.NodeReaddirer)((*linkDir)(nil))
)

func (d *linkDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if d.t.Multilink.Link(d.id) == nil {
		return syscall.ENOENT
	}
	d.fillAttr(&out.Attr, syscall.S_IFDIR|d.t.Perms.DirMode(), 0, d.since)
	return 0
}

func (d *linkDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return fs.NewListDirStream([]fuse.DirEntry{
		{Name: "close", Mode: syscall.S_IFREG, Ino: linkIno(d.id, 2)},
		{Name: "stats", Mode: syscall.S_IFREG, Ino: linkIno(d.id, 1)},
	}), 0
}

func (d *linkDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if d.t.Multilink.Link(d.id) == nil {
		return nil, syscall.ENOENT
	}
	switch name {
	case "stats":
		ml, id := d.t.Multilink, d.id
		render := func() (string, bool) {
			if p := ml.Link(id); p != nil {
				return portStats(p, false), true
			}
			return "", false
		}
		f := &statsFile{node: node{t: d.t}, render: render}
		text, _ := render()
		f.fillAttr(&out.Attr, syscall.S_IFREG|d.t.Perms.StatsMode(), uint64(len(text)), d.since)
		return d.NewInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG, Ino: linkIno(d.id, 1)}), 0
	case "close":
		f := &closeFile{node: node{t: d.t}, id: d.id, since: d.since}
		f.fillAttr(&out.Attr, syscall.S_IFREG|d.t.Perms.CloseMode(), 0, d.since)
		return d.NewInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG, Ino: linkIno(d.id, 2)}), 0
	}
	return nil, syscall.ENOENT
}
