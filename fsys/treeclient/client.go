package treeclient

// Client: the tree's I/O in a reader process, each request bounded in time.
//
// Why a process. A FUSE request that the server has read is waited out
// by the kernel uninterruptibly (fuse's request_wait_answer: after the
// killable wait, a request already in userspace is waited for with
// wait_event). A thread stuck there keeps its whole process from ending:
// SIGKILL leaves the thread-group leader a zombie and the parent's wait
// does not return, until the server answers or dies. A goroutine with a
// timeout is no way out: its thread is ours. So the program that must end
// on time never makes a request to the mount itself: every open, read,
// readdir and write is made by a child (this binary re-executed, argv[0]
// ReaderArg0, ServeReader), asked over a socket pair and given until a
// deadline to answer. One that does not is killed and abandoned, never
// waited for; if it is stuck in the mount it lingers as a zombie (its
// parent, or init once we are gone, reaps it) until the server answers
// or dies, and it holds nothing of ours. The next request starts a new
// reader.
//
// Why this shape, of those that work. One long-lived reader answering one
// request at a time, not a process per request (a hand-off polls every
// 20 ms: a fork and exec each time would cost more than the hand-off).
// This binary re-executed, not a helper of its own: Go cannot fork
// without exec (its runtime is threads), and one binary keeps the
// reader's checks the very code of the caller's, with nothing to install
// or find. Nothing short of a process will do: the kernel's interrupt
// (FUSE_INTERRUPT) is only a request to the server, which a stuck or
// hostile one ignores, and aborting the connection (fusectl's abort)
// would take down someone's daemon. The reader is in a process group of
// its own, so the terminal's ^C is the caller's to handle, not the
// reader's.
//
// What the reader acts on. The first reader resolves PATH (the lookup in
// the directory above the mount can be a request to another FUSE mount:
// it too must not be made by the caller) as Open does, O_PATH, and sends
// the descriptor back over the socket (SCM_RIGHTS). The caller proves
// that descriptor (the checks of the package doc, none of which is a
// request to the server) before any request is made through it. The
// reader proves it too, and acts only through it. A later reader gets
// that proven descriptor, never the path, and proves it again before
// serving.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ReaderArg0 is argv[0] of a reader process. A program that uses Client
// calls ServeReader first thing in main when IsReader says it is one.
const ReaderArg0 = "multifs-tree-reader"

// maxFrame bounds a message between a caller and its reader: a links
// listing of MaxLinks ids, or a stats file, with room to spare.
const maxFrame = 4 << 20

// The reader's descriptors, as exec's ExtraFiles number them.
const (
	readerSock = 3 // its end of the socket pair
	readerRoot = 4 // the proven root, for a reader that does not open PATH
)

// IsReader says whether this process was started as a reader.
func IsReader() bool { return len(os.Args) == 1 && os.Args[0] == ReaderArg0 }

// request is what the caller asks a reader.
type request struct {
	Op   string `json:"op"` // open, adopt, root, link, links, close
	Path string `json:"path,omitempty"`
	ID   uint64 `json:"id,omitempty"`
}

// reply is a reader's answer. Err says what went wrong, Errno its errno if
// one; NoLink is ErrNoLink.
type reply struct {
	Err    string   `json:"err,omitempty"`
	Errno  int      `json:"errno,omitempty"`
	NoLink bool     `json:"nolink,omitempty"`
	Stats  Stats    `json:"stats,omitempty"`
	IDs    []uint64 `json:"ids,omitempty"`
}

func (r *reply) setErr(err error) {
	if errors.Is(err, ErrNoLink) {
		r.NoLink = true
	}
	r.Err = err.Error()
	var errno syscall.Errno
	if errors.As(err, &errno) {
		r.Errno = int(errno)
	}
}

// err is the reply's error as the caller sees it.
func (r *reply) err() error {
	switch {
	case r.NoLink:
		return ErrNoLink
	case r.Err != "":
		return &readerError{msg: r.Err, errno: syscall.Errno(r.Errno)}
	}
	return nil
}

// readerError is an error a reader met, with its errno for errors.Is.
type readerError struct {
	msg   string
	errno syscall.Errno
}

func (e *readerError) Error() string { return e.msg }
func (e *readerError) Unwrap() error {
	if e.errno == 0 {
		return nil
	}
	return e.errno
}

// NoAnswerError is a request the mount did not answer in time: its reader
// was killed and abandoned. The request may still happen (a close may
// still close), or not.
type NoAnswerError struct {
	What   string        // "reading links/2/stats"
	Waited time.Duration // how long it was waited for
}

func (e *NoAnswerError) Error() string {
	return fmt.Sprintf("no answer to %s within %v", e.What, e.Waited.Round(time.Millisecond))
}

// ServeReader is a reader's main: it answers requests on its socket until
// the caller closes it, and returns the exit status.
func ServeReader() int {
	f := os.NewFile(readerSock, "tree socket")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "multifs: a tree reader needs its socket as descriptor 3")
		return 2
	}
	conn, ok := c.(*net.UnixConn)
	if !ok {
		return 2
	}
	defer conn.Close()
	var t *Tree
	noTree := errors.New("no tree: the reader was asked nothing else first")
	for {
		var req request
		if err := readFrame(conn, &req, nil); err != nil {
			if errors.Is(err, io.EOF) {
				return 0
			}
			return 2
		}
		var rep reply
		var rights []byte
		switch {
		case req.Op == "open" && t == nil:
			fd, err := openRoot(req.Path)
			if err != nil {
				rep.setErr(err)
				break
			}
			// The caller proves what it gets; serve only if it holds here too.
			rights = unix.UnixRights(fd)
			if t, err = adopt(fd); err != nil {
				noTree = err
			}
		case req.Op == "adopt" && t == nil:
			if t, err = adopt(readerRoot); err != nil {
				noTree = err
				rep.setErr(err)
			}
		case t == nil:
			rep.setErr(noTree)
		case req.Op == "root":
			rep.Stats, err = t.Root()
		case req.Op == "link":
			rep.Stats, err = t.Link(req.ID)
		case req.Op == "links":
			rep.IDs, err = t.Links()
		case req.Op == "close":
			err = t.CloseLink(req.ID)
		default:
			err = fmt.Errorf("unknown request %q", req.Op)
		}
		if err != nil && rep.Err == "" && !rep.NoLink {
			rep.setErr(err)
		}
		if err := writeFrame(conn, rep, rights); err != nil {
			return 2
		}
		err = nil
	}
}

// Client is a tree read and written by a reader process, each request
// bounded by its context; see the comment at the top of this file. Its
// methods may be called from one goroutine at a time or several: requests
// are made one after another.
type Client struct {
	Path  string
	Owner uint32 // the mount's user_id: 0 or the caller's euid
	t     *Tree  // the proven descriptor, this process's copy; no I/O
	mu    sync.Mutex
	r     *reader // nil: none alive (the next request starts one)
}

// reader is one reader process.
type reader struct {
	proc *os.Process
	conn *net.UnixConn
	done chan struct{} // closed once it has been reaped
}

// closeWait bounds the wait for a reader let go, which holds a descriptor
// on the mount until it is gone (an unmount right after would find the
// mount busy). One that answered its last request ends at once.
const closeWait = time.Second

// Start resolves path in a reader, proves the descriptor it sends back
// (the package doc: no request to the mount's server is made before that
// proof), and reads the root stats; all within ctx. The error says what is
// wrong in a few words, without the path: an *UntrustedError for a mount
// served by someone else, a *NoAnswerError for one that did not answer.
func Start(ctx context.Context, path string) (*Client, error) {
	r, err := startReader(nil)
	if err != nil {
		return nil, err
	}
	var rep reply
	start := time.Now()
	rights, err := r.exchange(ctx, request{Op: "open", Path: path}, &rep)
	if err != nil {
		r.abandon()
		return nil, callErr(ctx, "opening it", start, err)
	}
	if err := rep.err(); err != nil {
		for _, fd := range rights {
			unix.Close(fd)
		}
		r.close()
		var re *readerError
		if errors.As(err, &re) && re.errno != 0 {
			return nil, re.errno // as unix.Open says it: "no such file or directory"
		}
		return nil, err
	}
	if len(rights) != 1 {
		for _, fd := range rights {
			unix.Close(fd)
		}
		r.abandon()
		return nil, fmt.Errorf("tree reader: sent %d descriptors, not 1", len(rights))
	}
	t, err := Adopt(rights[0])
	if err != nil {
		r.close()
		return nil, err
	}
	t.Path = path
	c := &Client{Path: path, Owner: t.Owner, t: t, r: r}
	st, err := c.Root(ctx)
	if err == nil {
		err = checkRoot(st)
	} else if errors.Is(err, unix.ENOTCONN) {
		err = errors.New("a FUSE mount whose daemon is gone")
	} else {
		err = fmt.Errorf("stats: %w", err)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// startReader starts a reader; root, if not nil, is the proven descriptor
// it is to adopt.
func startReader(root *os.File) (*reader, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	mine := os.NewFile(uintptr(pair[0]), "tree reader")
	theirs := os.NewFile(uintptr(pair[1]), "tree reader")
	defer theirs.Close()
	files := []*os.File{theirs}
	if root != nil {
		files = append(files, root)
	}
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe", // this very binary, whatever its name or path now
		Args:        []string{ReaderArg0},
		Env:         readerEnv(),
		ExtraFiles:  files,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if err := cmd.Start(); err != nil {
		mine.Close()
		return nil, fmt.Errorf("starting a tree reader: %w", err)
	}
	// Reaped whenever it ends; only close waits for that, and briefly.
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	c, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	return &reader{proc: cmd.Process, conn: c.(*net.UnixConn), done: done}, nil
}

// readerEnv is the reader's environment: it needs none. GORACE alone is
// kept, for race-enabled test binaries (whose exit otherwise sleeps 1 s).
func readerEnv() []string {
	env := []string{}
	if v, ok := os.LookupEnv("GORACE"); ok {
		env = append(env, "GORACE="+v)
	}
	return env
}

// exchange sends req and reads the answer into rep, by ctx's deadline
// and until ctx is done; the descriptors sent with it are returned.
func (r *reader) exchange(ctx context.Context, req request, rep *reply) ([]int, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dl, _ := ctx.Deadline() // zero: none
	r.conn.SetDeadline(dl)
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		r.conn.SetDeadline(time.Unix(1, 0)) // wakes the read at once
		close(fired)
	})
	defer func() {
		if !stop() {
			<-fired // so that it cannot touch the next exchange's deadline
		}
	}()
	if err := writeFrame(r.conn, req, nil); err != nil {
		return nil, err
	}
	var fds []int
	if err := readFrame(r.conn, rep, &fds); err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, err
	}
	return fds, nil
}

// abandon kills a reader that may be stuck in the mount, without waiting
// for it (see the top of this file).
func (r *reader) abandon() {
	r.proc.Kill()
	r.conn.Close()
}

// close lets a reader that is not stuck go: it ends at EOF. It is waited
// for, closeWait at most, then killed and left.
func (r *reader) close() {
	r.conn.Close()
	select {
	case <-r.done:
	case <-time.After(closeWait):
		r.proc.Kill()
	}
}

// callErr is the error of an exchange that failed.
func callErr(ctx context.Context, what string, start time.Time, err error) error {
	if ctx.Err() != nil {
		if cause := context.Cause(ctx); cause != context.DeadlineExceeded {
			return cause // the caller's reason: a signal, say
		}
		return &NoAnswerError{What: what, Waited: time.Since(start)}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return &NoAnswerError{What: what, Waited: time.Since(start)}
	}
	return fmt.Errorf("tree reader: %w", err)
}

// call makes one request, starting a reader if none is alive.
func (c *Client) call(ctx context.Context, what string, req request) (reply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var rep reply
	if c.t == nil {
		return rep, os.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return rep, context.Cause(ctx)
	}
	start := time.Now()
	if c.r == nil {
		root, err := unix.FcntlInt(uintptr(c.t.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return rep, os.NewSyscallError("fcntl", err)
		}
		f := os.NewFile(uintptr(root), "tree root")
		r, err := startReader(f)
		f.Close()
		if err != nil {
			return rep, err
		}
		var ar reply
		if _, err := r.exchange(ctx, request{Op: "adopt"}, &ar); err != nil {
			r.abandon()
			return rep, callErr(ctx, what, start, err)
		}
		if err := ar.err(); err != nil {
			r.close()
			return rep, err
		}
		c.r = r
	}
	fds, err := c.r.exchange(ctx, req, &rep)
	for _, fd := range fds {
		unix.Close(fd) // none is expected but for an open
	}
	if err != nil {
		c.r.abandon()
		c.r = nil
		return reply{}, callErr(ctx, what, start, err)
	}
	return rep, rep.err()
}

// Root reads PATH/stats.
func (c *Client) Root(ctx context.Context) (Stats, error) {
	rep, err := c.call(ctx, "reading stats", request{Op: "root"})
	return rep.Stats, err
}

// Link reads PATH/links/ID/stats; ErrNoLink if the link is not open.
func (c *Client) Link(ctx context.Context, id uint64) (Stats, error) {
	rep, err := c.call(ctx, "reading "+linkFile(id, "stats"), request{Op: "link", ID: id})
	return rep.Stats, err
}

// Links lists the open links' ids, ascending.
func (c *Client) Links(ctx context.Context) ([]uint64, error) {
	rep, err := c.call(ctx, "listing links", request{Op: "links"})
	if err == nil && len(rep.IDs) > MaxLinks {
		err = fmt.Errorf("links: more than %d", MaxLinks)
	}
	return rep.IDs, err
}

// CloseLink writes "1" to PATH/links/ID/close; ErrNoLink if it is not
// open. A *NoAnswerError leaves it unknown whether the link was closed.
func (c *Client) CloseLink(ctx context.Context, id uint64) error {
	_, err := c.call(ctx, "writing "+linkFile(id, "close"), request{Op: "close", ID: id})
	return err
}

// Close lets the reader go (it ends at EOF; closeWait at most is waited
// for that) and releases the descriptor.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.r != nil {
		c.r.close()
		c.r = nil
	}
	if c.t == nil {
		return nil
	}
	err := c.t.Close()
	c.t = nil
	return err
}

// writeFrame sends v as one frame: its length (4 bytes, big-endian), then
// its JSON; rights, if any, go with it.
func writeFrame(conn *net.UnixConn, v any, rights []byte) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(body) > maxFrame {
		return fmt.Errorf("a frame of %d bytes, more than %d", len(body), maxFrame)
	}
	msg := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(body)), uint32(len(body)))
	msg = append(msg, body...)
	n, _, err := conn.WriteMsgUnix(msg, rights, nil)
	if err == nil && n < len(msg) {
		_, err = conn.Write(msg[n:])
	}
	return err
}

// readFrame reads one frame into v; descriptors that came with it are
// appended to *fds (nil: none are accepted, any received is closed).
func readFrame(conn *net.UnixConn, v any, fds *[]int) error {
	var hdr [4]byte
	oob := make([]byte, unix.CmsgSpace(4*4))
	got := 0
	for got < len(hdr) {
		n, oobn, _, _, err := conn.ReadMsgUnix(hdr[got:], oob)
		if oobn > 0 {
			if err := takeRights(oob[:oobn], fds); err != nil {
				return err
			}
		}
		if n == 0 && err == nil {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			if got == 0 && err == io.EOF {
				return io.EOF
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		got += n
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size > maxFrame {
		return fmt.Errorf("a frame of %d bytes, more than %d", size, maxFrame)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(conn, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return json.Unmarshal(body, v)
}

// takeRights collects the descriptors of an SCM_RIGHTS message.
func takeRights(oob []byte, fds *[]int) error {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range got {
			unix.CloseOnExec(fd)
			if fds == nil {
				unix.Close(fd)
				continue
			}
			*fds = append(*fds, fd)
		}
	}
	return nil
}
