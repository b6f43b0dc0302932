package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"multifs/control/vhostuser/virtq"
	"multifs/multilink/conn"
)

// Conn is one frontend's connection: the vhost-user device it drives
// (features, memory table, the receive and transmit queues) and, for the
// multilink, the host's data channel (a conn.Conn): Receive takes the
// frames the guest transmits, the sends put frames in its receive
// buffers.
//
// Four goroutines touch it: the message loop (Serve), the host port's
// reader (Receive), whoever sends to the host (the multilink serializes
// them) and its notifier (wait.go), which alone writes the call
// eventfds. Each queue's lock guards its ring; the memory table changes
// only with both held, so the data path, which touches guest memory only
// under its queue's lock, never sees it unmapped.
type Conn struct {
	sock *net.UnixConn
	rc   syscall.RawConn
	log  *logrus.Entry

	ctl      sync.Mutex // the message loop's state, and Close
	features uint64
	protocol uint64
	mem      *virtq.Memory // changed under ctl and every queue's lock

	q    [numQueues]queue
	note notifier

	closeOnce sync.Once
	closed    atomic.Bool
	readShut  atomic.Bool
	faults    atomic.Int64
	gone      atomic.Bool // disconnect asked
}

// queue is one virtqueue: 0 receive (frames to the guest), 1 transmit.
type queue struct {
	idx int
	mu  sync.Mutex

	// As the frontend configured it.
	num     uint32
	addr    vringAddr
	addrSet bool
	base    uint16
	enable  bool // SET_VRING_ENABLE

	// What the data path uses.
	ring    virtq.Ring
	live    bool // ring set up on the current memory, kick set
	enabled bool // enable, or no protocol features negotiated
	hdrLen  int
	mrg     bool

	ep, wake, kick int
	waiting        int
	closing, freed bool
}

// MaxFaults is how many bad chains, descriptors or requests a frontend
// may send before it is disconnected. An honest one sends none.
const MaxFaults = 64

// Timeouts of a request's payload once its header came, and of a reply.
const ioTimeout = 5 * time.Second

// New makes the device for a frontend connected on sock. Serve then
// runs its message loop.
func New(sock *net.UnixConn, log *logrus.Entry) (*Conn, error) {
	rc, err := sock.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &Conn{sock: sock, rc: rc, log: log}
	for i := range c.q {
		q := &c.q[i]
		q.idx, q.hdrLen = i, netHdrLenLegacy
		if err := q.initWait(); err != nil {
			for j := 0; j < i; j++ {
				c.q[j].freeLocked()
			}
			return nil, err
		}
	}
	c.note.init()
	return c, nil
}

var _ conn.Conn = (*Conn)(nil)

// Serve reads and answers the frontend's requests until its socket ends,
// a request cannot be parsed (the stream is lost then), or Close. It
// returns why; the caller ends the host then.
func (c *Conn) Serve() error {
	for {
		m, err := c.read()
		if err != nil {
			return err
		}
		c.ctl.Lock()
		if c.closed.Load() {
			c.ctl.Unlock()
			closeFDs(m.FDs)
			return net.ErrClosed
		}
		reply, herr := c.handle(m)
		c.ctl.Unlock()
		if c.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
			c.log.WithFields(logrus.Fields{"request": reqName(m.Request), "flags": m.Flags, "size": m.Size, "fds": len(m.FDs), "payload": fmt.Sprintf("%x", m.Payload[:min(len(m.Payload), 48)])}).Debug("vhost-user: request")
		}
		closeFDs(m.FDs)
		// A request multifs does not support was logged as such; one it
		// refuses is a fault of the frontend's.
		if herr != nil && !errors.Is(herr, errUnsupported) {
			c.log.WithFields(logrus.Fields{"request": reqName(m.Request), "error": herr.Error()}).Warn(MsgBadRequest)
			c.fault()
		}
		switch {
		case reply != nil:
		case replyDue(m.Request) || m.Flags&flagNeedReply != 0 && c.protocol&protoReplyAck != 0:
			// REPLY_ACK's status, or an error where a reply was due.
			status := uint64(0)
			if herr != nil {
				status = 1
			}
			reply = u64Payload(status)
		}
		if reply != nil {
			c.sock.SetWriteDeadline(time.Now().Add(ioTimeout))
			if _, err := c.sock.Write(encodeReply(m.Request, reply)); err != nil {
				return err
			}
		}
		if c.gone.Load() {
			return errDisconnected
		}
	}
}

// Log messages, constant; the details are fields.
const (
	MsgBadRequest  = "vhost-user: request refused"
	MsgUnsupported = "vhost-user: unsupported request"
	MsgBadChain    = "vhost-user: bad descriptor chain; frame dropped"
	MsgRingFailed  = "vhost-user: ring unusable; stopped"
	MsgDisconnect  = "vhost-user: disconnecting the frontend"
	MsgRingResumed = "vhost-user: ring resumes at the guest's used index"
)

var errDisconnected = errors.New("disconnected by the daemon")

// read reads one request: its header, bounded and checked, then its
// payload within ioTimeout; descriptors from either part are the
// message's.
func (c *Conn) read() (*Message, error) {
	m := &Message{}
	var hdr [HeaderLen]byte
	c.sock.SetReadDeadline(time.Time{})
	if err := c.readFull(hdr[:], m); err != nil {
		closeFDs(m.FDs)
		return nil, err
	}
	h, err := ParseHeader(hdr[:])
	if err != nil {
		closeFDs(m.FDs)
		c.log.WithFields(logrus.Fields{"request": h.Request, "flags": h.Flags, "size": h.Size, "error": err.Error()}).Warn(MsgBadRequest)
		return nil, err
	}
	m.Header = h
	m.Payload = make([]byte, h.Size)
	c.sock.SetReadDeadline(time.Now().Add(ioTimeout))
	if err := c.readFull(m.Payload, m); err != nil {
		closeFDs(m.FDs)
		return nil, err
	}
	return m, nil
}

var oobLen = unix.CmsgSpace(MaxFDs * 4)

// readFull fills b, collecting descriptors into m; more than MaxFDs, or
// any other control message, is an error.
func (c *Conn) readFull(b []byte, m *Message) error {
	oob := make([]byte, oobLen)
	for n := 0; n < len(b); {
		k, oobn, flags, _, err := c.sock.ReadMsgUnix(b[n:], oob)
		if oobn > 0 {
			fds, perr := parseRights(oob[:oobn])
			m.FDs = append(m.FDs, fds...)
			if perr != nil {
				return perr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 || len(m.FDs) > MaxFDs {
			return errTooManyFDs
		}
		if err != nil {
			return err
		}
		if k == 0 {
			return io.EOF
		}
		n += k
	}
	return nil
}

var errTooManyFDs = errors.New("too many descriptors in one request")

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, cm := range msgs {
		if cm.Header.Level != unix.SOL_SOCKET || cm.Header.Type != unix.SCM_RIGHTS {
			return fds, errors.New("unexpected control message")
		}
		got, err := unix.ParseUnixRights(&cm)
		fds = append(fds, got...)
		if err != nil {
			return fds, err
		}
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// fault counts one fault of the frontend's; past MaxFaults it is
// disconnected.
func (c *Conn) fault() {
	if c.faults.Add(1) == MaxFaults+1 {
		c.disconnect("too many faults")
	}
}

// disconnect hangs up on the frontend: the message loop sees the end and
// the host leaves. Any goroutine, any lock held.
func (c *Conn) disconnect(why string) {
	if c.gone.Swap(true) {
		return
	}
	c.log.WithFields(logrus.Fields{"reason": why, "faults": c.faults.Load()}).Warn(MsgDisconnect)
	c.rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
}

// Faults is how many faults the frontend made.
func (c *Conn) Faults() int64 { return c.faults.Load() }

// errMemFault is guest memory that faulted on access: a file its
// frontend shrank under the mapping.
var errMemFault = errors.New("guest memory fault")

// guard runs f, turning a memory fault in it into an error, and any other
// panic too: a hostile guest must not take the daemon down through a bug
// either.
func guard(log *logrus.Entry, f func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			if _, ok := p.(interface{ Addr() uintptr }); ok {
				err = fmt.Errorf("%w: %v", errMemFault, p)
				return
			}
			log.WithField("panic", fmt.Sprint(p)).WithField("stack", string(debug.Stack())).Error("vhost-user: internal error")
			err = fmt.Errorf("internal error: %v", p)
		}
	}()
	return f()
}

// ringFailed stops a queue whose ring is beyond use (an index that
// cannot be, guest memory gone) and disconnects the frontend. q.mu held.
func (c *Conn) ringFailed(q *queue, err error) {
	q.live = false
	c.log.WithFields(logrus.Fields{"queue": q.idx, "error": err.Error()}).Warn(MsgRingFailed)
	c.disconnect("ring unusable: " + err.Error())
}

func (c *Conn) chainFaults(q *queue, n int, err error) {
	c.log.WithFields(logrus.Fields{"queue": q.idx, "error": err.Error(), "frames": n}).Warn(MsgBadChain)
	for i := 0; i < n; i++ {
		c.fault()
	}
}

// Receive delivers the frames the guest transmits, batch by batch, until
// the Conn is closed or, after CloseRead, the transmit ring is empty.
func (c *Conn) Receive(r conn.Receiver) error {
	q := &c.q[txQueue]
	for {
		wait, err := c.receiveOnce(q, r)
		if err != nil {
			return err
		}
		if !wait {
			continue
		}
		if c.readShut.Load() {
			return io.EOF
		}
		if err := q.wait(-1); err != nil {
			return err
		}
	}
}

// receiveOnce takes one batch from the transmit ring, and delivers it
// without the lock; wait means there was nothing to take.
func (c *Conn) receiveOnce(q *queue, r conn.Receiver) (wait bool, err error) {
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		return false, os.ErrClosed
	}
	if !q.live {
		q.mu.Unlock()
		return true, nil
	}
	var b *conn.Batch
	n, bad := 0, 0
	var badErr error
	notify := false
	gerr := guard(c.log, func() error {
		if !q.enabled {
			// Started but disabled: the protocol says to take and drop
			// what the guest sends.
			more, err := q.ring.Discard()
			if err != nil {
				return err
			}
			notify = q.ring.Publish()
			if more {
				return nil // the rest after the lock was let go
			}
			more, err = q.ring.EnableNotify()
			wait = !more
			return err
		}
		avail, err := q.ring.Avail()
		if err != nil {
			return err
		}
		if avail == 0 {
			more, err := q.ring.EnableNotify()
			if err != nil || !more {
				wait = true
				return err
			}
		}
		// Busy: no kicks until the ring is found empty again (a no-op
		// with EVENT_IDX, or when kicks are off already).
		q.ring.DisableNotify()
		b = r.Get()
		for n < len(b.Bufs) {
			size, ok, err := q.ring.TakeFrame(b.Bufs[n], q.hdrLen)
			if !ok {
				if err != nil {
					return err
				}
				break
			}
			if err != nil {
				bad++
				badErr = err
				size = 0 // dropped and counted (rx_dropped) as a runt
			}
			b.Sizes[n] = size
			n++
		}
		notify = q.ring.Publish()
		return nil
	})
	if gerr != nil {
		c.ringFailed(q, gerr)
		n, notify, wait = 0, false, true
	}
	q.mu.Unlock()
	if bad > 0 {
		c.chainFaults(q, bad, badErr)
	}
	if notify {
		c.note.signal(q.idx)
	}
	if b != nil {
		if n == 0 {
			r.Put(b)
		} else {
			r.Deliver(b, n)
		}
	}
	return wait, nil
}

// TrySendBatch puts frames in the guest's receive buffers until one does
// not fit, without waiting: conn.ErrWouldBlock when the guest has not
// posted enough buffers.
func (c *Conn) TrySendBatch(frames [][]byte) (int, error) {
	return c.SendBatchWait(frames, -1)
}

// SendBatchWait is TrySendBatch waiting up to timeout in all for the
// guest to post buffers. A frame the guest's buffers can never hold, or
// a bad receive chain, ends the batch with an error (the multilink drops
// the rest, counted in tx_dropped).
func (c *Conn) SendBatchWait(frames [][]byte, timeout time.Duration) (int, error) {
	q := &c.q[rxQueue]
	var deadline time.Time
	if timeout >= 0 {
		deadline = time.Now().Add(timeout)
	}
	sent := 0
	for {
		k, wait, err := c.sendOnce(q, frames[sent:])
		sent += k
		if err != nil || !wait || sent == len(frames) {
			return sent, err
		}
		if timeout < 0 {
			return sent, conn.ErrWouldBlock
		}
		left := time.Until(deadline)
		if left <= 0 {
			return sent, conn.ErrWouldBlock
		}
		if err := q.wait(int((left + time.Millisecond - 1) / time.Millisecond)); err != nil {
			return sent, err
		}
	}
}

// ErrFrameDropped is what a send returns when a frame could not be put
// in the guest's buffers: a bad chain, or a frame larger than a buffer
// without VIRTIO_NET_F_MRG_RXBUF.
var ErrFrameDropped = errors.New("frame dropped by the vhost-user host")

func (c *Conn) sendOnce(q *queue, frames [][]byte) (k int, wait bool, err error) {
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		return 0, false, os.ErrClosed
	}
	if !q.live || !q.enabled {
		q.mu.Unlock()
		return 0, true, nil
	}
	notify := false
	var ferr error
	gerr := guard(c.log, func() error {
		// Kicks were asked for only while waiting for buffers.
		q.ring.DisableNotify()
		for k < len(frames) {
			ok, err := q.ring.PutFrame(frames[k], q.hdrLen, q.mrg)
			if errors.Is(err, virtq.ErrAvailIdx) {
				return err
			}
			if err != nil {
				ferr = err
				break
			}
			if !ok {
				more, err := q.ring.EnableNotify()
				if err != nil {
					return err
				}
				if !more {
					wait = true
					break
				}
				q.ring.DisableNotify()
				continue
			}
			k++
		}
		notify = q.ring.Publish()
		return nil
	})
	if gerr != nil {
		c.ringFailed(q, gerr)
		q.mu.Unlock()
		return k, false, fmt.Errorf("%w: %v", ErrFrameDropped, gerr)
	}
	q.mu.Unlock()
	if notify {
		c.note.signal(q.idx)
	}
	if ferr != nil {
		if !errors.Is(ferr, virtq.ErrNoFit) {
			c.chainFaults(q, 1, ferr)
		}
		return k, false, fmt.Errorf("%w: %v", ErrFrameDropped, ferr)
	}
	return k, wait, nil
}

// CloseRead makes Receive end (io.EOF) once the transmit ring is empty:
// the frontend has gone, and what its guest sent before is taken.
func (c *Conn) CloseRead() {
	c.readShut.Store(true)
	q := &c.q[txQueue]
	q.mu.Lock()
	q.poke()
	q.mu.Unlock()
}

// PeerGone reports, without reading, whether the frontend hung up.
func (c *Conn) PeerGone() bool {
	gone := true
	c.rc.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		if n, err := unix.Poll(pfd, 0); err == nil {
			gone = n > 0 && pfd[0].Revents&(unix.POLLHUP|unix.POLLRDHUP|unix.POLLERR) != 0
		}
	})
	return gone || c.gone.Load()
}

// Close hangs up on the frontend, stops both queues, unmaps guest memory
// and closes every descriptor of the connection (a wait under way lets go
// of its own first). Any goroutine; it never waits for the frontend.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.sock.Close()
		c.ctl.Lock()
		for i := range c.q {
			q := &c.q[i]
			q.mu.Lock()
			q.closing, q.live = true, false
			q.setKickLocked(-1)
			q.poke()
			if q.waiting == 0 {
				q.freeLocked()
			}
			q.mu.Unlock()
		}
		// No queue uses the memory now.
		c.mem.Unmap()
		c.mem = nil
		c.ctl.Unlock()
		c.note.stop()
	})
	return nil
}
