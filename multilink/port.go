package multilink

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"multifs/multilink/conn"
)

// Conn is a peer's data channel (see package conn for its contract: the
// one receive entry point, who owns a batch when, the errors).
type Conn = conn.Conn

// ErrWouldBlock is what a Conn's sends return when the peer's socket is
// full (conn.ErrWouldBlock).
var ErrWouldBlock = conn.ErrWouldBlock

// Two policies for a peer whose socket is full, one per direction.
//
// Towards a link (the host's fan-out), frames wait in a bounded queue,
// QueueBytes per link: a unix datagram socket takes only a few frames
// (net.unix.max_dgram_qlen, 10 by default) before its reader drains it, so
// a burst would lose frames to a link that is merely a little late. A link
// that stays stuck fills its queue and then loses frames (tx_dropped); the
// host and the other links never wait for it.
//
// Towards the host, the link's reader waits up to HostWait for room. Every
// link's frames go to the host alone, so nobody else is held up, and the
// wait pushes back on the senders (their sockets fill while we wait), as
// the reference's blocking write does: under overload the links slow down
// instead of having their frames read, copied and thrown away. A host that
// stays stuck costs one HostWait, then its frames are dropped at once
// (tx_dropped) until it takes frames again.
//
// All queues together are bounded too (TotalQueueBytes), so that many stuck
// links cannot make the daemon grow without limit. Both bounds count the
// memory a queue holds (whole chunks: see frameQueue), not the frames'
// length, so they hold whatever the frames' size.
const (
	QueueBytes      = 1 << 20
	TotalQueueBytes = 64 << 20
	HostWait        = 20 * time.Millisecond
)

// PeerInfo is who a peer is, as learnt at join time.
type PeerInfo struct {
	Transport   string // "vde", "seqpacket", "vhost-user" or "tap"
	Description string // the peer's own words (vde-2 request), may be empty
	PID         int32  // SO_PEERCRED of the connecting process
	UID         uint32
	GID         uint32
	Since       time.Time
}

// Port is an attached peer: the host or one link.
type Port struct {
	ID     uint64 // link id (1, 2, ...); 0 for the host
	Info   PeerInfo
	isHost bool

	ml      *Multilink
	conn    Conn
	onClose func()
	log     *logrus.Entry

	rxPackets, rxBytes, rxDropped atomic.Uint64
	txPackets, txBytes, txDropped atomic.Uint64
	rxDupDropped                  atomic.Uint64 // links only: duplicates not given to the host
	// lastRx is when the last batch came from the peer (mono; at first,
	// when it joined): set once per batch, not per frame.
	lastRx atomic.Int64

	// out holds frames the peer's socket could not take at once, in order.
	// While it is not empty a writer goroutine drains it and every new frame
	// queues behind it, so frames are never reordered.
	out struct {
		sync.Mutex
		q     frameQueue
		stuck bool // host only: the last send found no room within HostWait
	}

	closeOnce sync.Once
	closed    atomic.Bool // set under out's lock: no send is under way then
	leaving   atomic.Bool // the peer is gone; what it sent is being drained
	done      chan struct{}
	// readerDone is closed when the reader has counted its last frame;
	// drainDone (under out's lock, nil when no drain runs) when the
	// queue's writer has. Close waits for both, so that the counters it
	// logs are final.
	readerDone chan struct{}
	drainDone  chan struct{}
}

func newPort(m *Multilink, id uint64, isHost bool, info PeerInfo, conn Conn, onClose func()) *Port {
	if info.Since.IsZero() {
		info.Since = time.Now()
	}
	p := &Port{ID: id, Info: info, isHost: isHost, ml: m, conn: conn, onClose: onClose,
		done: make(chan struct{}), readerDone: make(chan struct{})}
	p.out.q.budget = &m.queueBudget
	p.lastRx.Store(mono())
	fields := logrus.Fields{"pid": info.PID, "peer": info.Description, "transport": info.Transport}
	if isHost {
		fields["link"] = "host"
	} else {
		fields["link"] = id
	}
	p.log = m.log.WithFields(fields)
	return p
}

// Closed reports whether the port has been closed.
func (p *Port) Closed() bool { return p.closed.Load() }

// Leaver is a Conn whose peer can leave while frames it sent are still
// waiting to be read: a port ends such a peer with Leave, which loses none
// of them. Both vde-2 and seqpacket peers are Leavers.
type Leaver interface {
	// CloseRead stops the peer's frames at what was sent: the reader
	// takes what is waiting, then reads EOF.
	CloseRead()
	// PeerGone reports, without reading, whether the peer has gone.
	PeerGone() bool
}

// LeaveWait bounds how long Leave waits for the reader to take what a
// departed peer left before the port is closed anyway.
const LeaveWait = time.Second

// Leave ends a port whose peer has gone (its control stream ended, say):
// it stops taking new frames towards the peer, lets the reader take what
// the peer sent before it left, waits for the port to close by itself at
// the end of that, up to LeaveWait, and closes it. Any number of callers
// may leave a port at once; each returns once it is closed.
func (p *Port) Leave() {
	if !p.Closed() {
		p.leaving.Store(true)
		if l, ok := p.conn.(Leaver); ok {
			l.CloseRead()
		}
		select {
		case <-p.done:
		case <-time.After(LeaveWait):
		}
	}
	p.Close()
}

// gone reports whether the peer has left, or is known to be leaving.
func (p *Port) gone() bool {
	if p.leaving.Load() {
		return true
	}
	l, ok := p.conn.(Leaver)
	return ok && l.PeerGone()
}

// Finaler is a Conn whose peer comes straight back when it is hung up:
// newer vdeplug4's ptp client reconnects at once, so a close alone would
// only give it a new id. CloseForGood calls Final first, while the Conn is
// still open (the peer can still be asked who it is) and before the
// hang-up, so that the reconnect already finds itself refused.
type Finaler interface {
	Final(p *Port)
}

// CloseForGood is Close for an operator's close (a link's close file): the
// peer is not to come back (see Finaler). Other peers just get Close.
func (p *Port) CloseForGood() {
	if f, ok := p.conn.(Finaler); ok && !p.Closed() {
		f.Final(p)
	}
	p.Close()
}

// Close ends the port: unregisters it, closes its Conn and runs onClose.
// It is idempotent and returns only when all of that is done and the
// port's counters are final: nothing is sent to it any more, and its
// reader and queue writer have stopped. Its closing log line has them.
func (p *Port) Close() {
	p.closeOnce.Do(func() {
		p.out.Lock()
		p.closed.Store(true)
		p.out.Unlock()
		p.ml.remove(p)
		if err := p.conn.Close(); err != nil {
			p.log.WithError(err).Debug("closing data socket")
		}
		if p.onClose != nil {
			p.onClose()
		}
		close(p.done)
		p.out.Lock()
		drained := p.drainDone
		p.out.Unlock()
		if drained != nil {
			<-drained
		}
		<-p.readerDone
		c := p.Counters()
		log := p.log.WithFields(logrus.Fields{
			"rx_packets": c.RxPackets, "rx_dropped": c.RxDropped,
			"tx_packets": c.TxPackets, "tx_dropped": c.TxDropped,
		})
		if p.isHost {
			log.Info("host detached")
		} else {
			log.WithField("rx_dup_dropped", c.RxDupDropped).Info("link closed")
		}
	})
}

func (p *Port) readLoop() {
	defer p.ml.wg.Done()
	err := p.conn.Receive(reader{p})
	close(p.readerDone) // before Close, which waits for it
	p.readFailed(err)
}

// reader is a port's conn.Receiver: batches from the multilink's pool,
// forwarded as they come.
type reader struct{ p *Port }

func (r reader) Get() *batch  { return r.p.ml.batches.get(r.p.isHost) }
func (r reader) Put(b *batch) { r.p.ml.batches.put(b) }
func (r reader) Deliver(b *batch, n int) {
	r.p.forward(b, n)
	r.p.ml.batches.put(b)
}

// forward counts the n frames of b and hands the good ones on.
func (p *Port) forward(b *batch, n int) {
	if n == 0 {
		return
	}
	now := mono()
	p.lastRx.Store(now)
	frames := b.Frames[:0]
	for i := 0; i < n; i++ {
		size := b.Sizes[i]
		if size < MinFrame || size > MaxFrame {
			p.rxDropped.Add(1)
			// WithField allocates even when the level discards the line,
			// and a peer may send nothing but runts.
			if p.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
				p.log.WithField("len", size).Debug("dropping frame of bad size")
			}
			continue
		}
		p.rxPackets.Add(1)
		p.rxBytes.Add(uint64(size))
		frames = append(frames, b.Bufs[i][:size])
	}
	if len(frames) > 0 {
		if p.isHost {
			p.ml.fromHost(frames)
		} else {
			p.ml.fromLink(p, frames, now)
		}
	}
}

func (p *Port) readFailed(err error) {
	p.log.WithError(err).Debug("reader ended")
	if !p.Closed() && !isClosedErr(err) && !errors.Is(err, io.EOF) {
		p.log.WithError(err).Warn("receive failed; closing")
	}
	p.Close()
}

// send delivers frames to this peer, in order, as its direction's policy
// says (see HostWait). frames are the caller's: whatever is queued is
// copied. It returns false, having counted nothing, if the port is closed:
// the frames were not for it.
func (p *Port) send(frames [][]byte) bool {
	p.out.Lock()
	defer p.out.Unlock()
	if p.Closed() {
		return false
	}
	return p.sendLocked(frames)
}

// sendToHost is send for the host, p, of frames from link from, less the
// duplicates. The out lock serialises every link's deliveries, and it is
// the duplicate table's lock too.
func (p *Port) sendToHost(from *Port, frames [][]byte, now int64) bool {
	p.out.Lock()
	defer p.out.Unlock()
	if p.Closed() {
		return false
	}
	if d := p.ml.dd; d != nil {
		if !p.ml.dedupActive(now) {
			d.record(from.ID, frames, now)
			return p.sendLocked(frames)
		}
		if d.histStart != d.histN {
			d.replay(now)
		}
		var dups int
		if frames, dups = d.filter(from.ID, frames, now); dups > 0 {
			p.ml.dupDropped.Add(uint64(dups))
			if from.rxDupDropped.Add(uint64(dups)) == uint64(dups) {
				from.log.Debug("first duplicate not given to the host")
			}
			if len(frames) == 0 {
				return true
			}
		}
	}
	return p.sendLocked(frames)
}

// sendLocked is send under the out lock, the port open.
func (p *Port) sendLocked(frames [][]byte) bool {
	if p.leaving.Load() {
		// The peer is gone. A send to it now could cost what it sent
		// before leaving and we have not read yet (a datagram socket's
		// queue is purged when a send to its dead peer is refused).
		p.drop(ErrWouldBlock, len(frames))
		return true
	}
	if p.isHost {
		var k int
		var err error
		if p.out.stuck {
			// It let a whole HostWait pass last time: don't make every
			// link wait again until it takes frames at once.
			k, err = p.conn.TrySendBatch(frames)
		} else {
			k, err = p.conn.SendBatchWait(frames, HostWait)
		}
		p.out.stuck = k < len(frames)
		for _, f := range frames[:k] {
			p.countTx(len(f))
		}
		if k < len(frames) {
			p.drop(err, len(frames)-k)
		}
		return true
	}
	i := 0
	if p.out.q.len() == 0 {
		k, err := p.conn.TrySendBatch(frames)
		for _, f := range frames[:k] {
			p.countTx(len(f))
		}
		i = k
		if err != nil && !errors.Is(err, ErrWouldBlock) {
			// The peer is gone or broken (its reader will close it):
			// what did not go is lost.
			p.drop(err, len(frames)-i)
			return true
		}
	}
	for ; i < len(frames); i++ {
		if !p.out.q.push(frames[i]) {
			p.drop(ErrWouldBlock, 1)
		}
	}
	if p.out.q.len() > 0 && p.drainDone == nil {
		p.drainDone = make(chan struct{})
		go p.drain(p.drainDone)
	}
	return true
}

// drain sends the queued frames in batches, waiting for the socket as
// needed, and ends when the queue is empty or the port is closed, closing
// done. Frames leave the queue only once sent, so new frames always queue
// behind them.
func (p *Port) drain(done chan struct{}) {
	var batch [BatchSize][]byte
	p.out.Lock()
	defer func() {
		p.drainDone = nil
		close(done)
		p.out.Unlock()
	}()
	for p.out.q.len() > 0 {
		n := p.out.q.peek(batch[:])
		p.out.Unlock()

		k, err := p.conn.SendBatchWait(batch[:n], time.Second)

		p.out.Lock()
		for i := 0; i < k; i++ {
			p.countTx(len(batch[i]))
		}
		p.out.q.pop(k)
		clear(batch[:n])
		if err != nil && !errors.Is(err, ErrWouldBlock) || p.Closed() {
			p.drop(err, p.out.q.len())
			p.out.q.reset()
			return
		}
	}
}

func (p *Port) countTx(n int) {
	p.txPackets.Add(1)
	p.txBytes.Add(uint64(n))
}

func (p *Port) drop(err error, n int) {
	if n <= 0 {
		return
	}
	if p.txDropped.Add(uint64(n)) == uint64(n) {
		p.log.WithError(err).Debug("first frame dropped towards this peer")
	}
}

func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed)
}

// Counters is a snapshot of a port's traffic counters.
type Counters struct {
	RxPackets, RxBytes, RxDropped uint64
	TxPackets, TxBytes, TxDropped uint64
	RxDupDropped                  uint64 // links only: counted in RxPackets, not given to the host
}

// Counters returns the port's current counters.
func (p *Port) Counters() Counters {
	return Counters{
		RxPackets: p.rxPackets.Load(), RxBytes: p.rxBytes.Load(), RxDropped: p.rxDropped.Load(),
		TxPackets: p.txPackets.Load(), TxBytes: p.txBytes.Load(), TxDropped: p.txDropped.Load(),
		RxDupDropped: p.rxDupDropped.Load(),
	}
}

// Idle is how long ago the last frame came from the peer (or, if none has
// yet, it joined).
func (p *Port) Idle() time.Duration { return time.Duration(mono() - p.lastRx.Load()) }

// IDString is the link's name in the tree.
func (p *Port) IDString() string { return strconv.FormatUint(p.ID, 10) }
