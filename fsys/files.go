package fsys

import (
	"context"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

func sortEntries(e []fuse.DirEntry) {
	sort.Slice(e, func(i, j int) bool { return e[i].Name < e[j].Name })
}

func wantsWrite(flags uint32) bool {
	return flags&syscall.O_ACCMODE != syscall.O_RDONLY
}

// statsFile renders key: value text afresh for every read from offset 0.
// render reports false once what it describes is gone (a closed link).
type statsFile struct {
	node
	render func() (string, bool)
}

// always adapts a renderer whose object lives as long as the tree.
func always(f func() string) func() (string, bool) {
	return func() (string, bool) { return f(), true }
}

var (
	_ = (fs.NodeOpener)((*statsFile)(nil))
	_ = (fs.NodeReader)((*statsFile)(nil))
	_ = (fs.NodeGetattrer)((*statsFile)(nil))
)

// statsHandle keeps the rendering that a read at offset 0 produced, so the
// rest of one `cat` reads the same text.
type statsHandle struct {
	mu   sync.Mutex
	text []byte
}

func (f *statsFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	text, ok := f.render()
	if !ok {
		return syscall.ENOENT
	}
	f.fillAttr(&out.Attr, syscall.S_IFREG|f.t.Perms.StatsMode(), uint64(len(text)), f.t.start)
	return 0
}

func (f *statsFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if wantsWrite(flags) || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EACCES
	}
	if _, ok := f.render(); !ok {
		return nil, 0, syscall.ENOENT
	}
	return &statsHandle{}, fuse.FOPEN_DIRECT_IO, 0
}

func (f *statsFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*statsHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if off == 0 || h.text == nil {
		text, _ := f.render()
		h.text = []byte(text)
	}
	if off >= int64(len(h.text)) {
		return fuse.ReadResultData(nil), 0
	}
	end := off + int64(len(dest))
	if end > int64(len(h.text)) {
		end = int64(len(h.text))
	}
	return fuse.ReadResultData(h.text[off:end]), 0
}

// closeFile closes its link when "1" is written to it. Like linkDir it
// keeps the id, not the link.
type closeFile struct {
	node
	id    uint64
	since time.Time

	mu sync.Mutex
	// truncOpen: the opens for writing whose O_TRUNC may still come, by
	// the caller's pid (see Setattr); at most maxTruncOpens.
	truncOpen map[uint32]*closeHandle
}

// maxTruncOpens bounds closeFile.truncOpen: one entry per process that
// holds the file open for writing, however many there are.
const maxTruncOpens = 256

// closeHandle is an open of a close file for writing.
type closeHandle struct {
	f   *closeFile
	pid uint32
}

var (
	_ = (fs.NodeOpener)((*closeFile)(nil))
	_ = (fs.NodeWriter)((*closeFile)(nil))
	_ = (fs.NodeSetattrer)((*closeFile)(nil))
	_ = (fs.NodeGetattrer)((*closeFile)(nil))
	_ = (fs.FileReleaser)((*closeHandle)(nil))
)

func (f *closeFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.fillAttr(&out.Attr, syscall.S_IFREG|f.t.Perms.CloseMode(), 0, f.since)
	return 0
}

func (f *closeFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if !wantsWrite(flags) {
		return nil, 0, syscall.EACCES
	}
	h := &closeHandle{f: f, pid: callerPid(ctx)}
	f.mu.Lock()
	if f.truncOpen == nil {
		f.truncOpen = make(map[uint32]*closeHandle)
	}
	if _, ok := f.truncOpen[h.pid]; !ok && len(f.truncOpen) >= maxTruncOpens {
		for pid := range f.truncOpen {
			delete(f.truncOpen, pid)
			break
		}
	}
	f.truncOpen[h.pid] = h
	f.mu.Unlock()
	return h, fuse.FOPEN_DIRECT_IO, 0
}

// Release ends what the open allowed.
func (h *closeHandle) Release(ctx context.Context) syscall.Errno {
	h.f.settled(h)
	return 0
}

// settled forgets h's open as one whose O_TRUNC may still come.
func (f *closeFile) settled(h *closeHandle) {
	f.mu.Lock()
	if f.truncOpen[h.pid] == h {
		delete(f.truncOpen, h.pid)
	}
	f.mu.Unlock()
}

func callerPid(ctx context.Context) uint32 {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Pid
	}
	return 0
}

// Setattr accepts only the truncation to zero of an open with O_TRUNC
// (what `echo 1 >` does first). Any other truncation to zero, `truncate -s
// 0` (ftruncate on an open file) or truncate(2) by path, is a write of
// nothing, and is answered as one is: EINVAL.
//
// The kernel (without atomic_o_trunc, which go-fuse does not ask for)
// sends an O_TRUNC open as OPEN, with O_TRUNC taken out of its flags, then
// SETATTR(size=0) from the same process without a file handle: ATTR_OPEN
// makes fuse_do_setattr drop the file. ftruncate(2) carries its handle
// (FATTR_FH); truncate(2) by path comes without a handle and without an
// OPEN before it. So a SETATTR without a handle is the O_TRUNC of an open
// only if its caller has just opened the file for writing and has not
// written or closed it since. What remains: a process holding the file
// open for writing that then truncates it by path is answered as if it
// had opened it with O_TRUNC; either way nothing happens.
func (f *closeFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	const harmless = fuse.FATTR_SIZE | fuse.FATTR_FH | fuse.FATTR_LOCKOWNER |
		fuse.FATTR_ATIME | fuse.FATTR_MTIME | fuse.FATTR_ATIME_NOW | fuse.FATTR_MTIME_NOW | fuse.FATTR_CTIME
	size, hasSize := in.GetSize()
	if in.Valid&^harmless != 0 || !hasSize {
		return syscall.EPERM
	}
	if size != 0 {
		return syscall.EINVAL
	}
	pid := callerPid(ctx)
	opening := false
	if in.Valid&fuse.FATTR_FH == 0 {
		f.mu.Lock()
		if h := f.truncOpen[pid]; h != nil {
			delete(f.truncOpen, pid)
			opening = true
		}
		f.mu.Unlock()
	}
	if !opening {
		f.t.Log.WithField("link", f.id).WithField("pid", pid).WithField("handle", in.Valid&fuse.FATTR_FH != 0).
			Warn(`close: refused truncate (want "1" written at offset 0)`)
		return syscall.EINVAL
	}
	f.fillAttr(&out.Attr, syscall.S_IFREG|f.t.Perms.CloseMode(), 0, f.since)
	return 0
}

func (f *closeFile) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if h, ok := fh.(*closeHandle); ok {
		f.settled(h) // an O_TRUNC comes before any write
	}
	cmd := strings.TrimSuffix(string(data), "\n")
	log := f.t.Log.WithField("link", f.id)
	if caller, ok := fuse.FromContext(ctx); ok {
		log = log.WithField("pid", caller.Pid)
	}
	if off != 0 || cmd != "1" {
		if len(cmd) > 32 {
			cmd = cmd[:32] + "..."
		}
		// What was written is the caller's text: a field, which the CLI's
		// formatter escapes and whose message stays one rate-limit key.
		log.WithField("offset", off).WithField("data", cmd).Warn(`close: refused write (want "1" at offset 0)`)
		return 0, syscall.EINVAL
	}
	log.Info("close requested through the control file")
	// For good: a peer that reconnects at once (newer vdeplug4's ptp) is
	// refused, or the close would only renumber it.
	if err := f.t.Multilink.CloseLinkForGood(f.id); err != nil {
		return 0, syscall.ENOENT
	}
	return uint32(len(data)), 0
}
