// Package conn is the seam between the multilink and what carries a peer's
// frames: the Conn a peer's data channel is (package control/engine's
// descriptors in the daemon, conntest's in-memory peer in tests), the
// Batch frames are received into, and the Receiver that owns batches.
//
// It is a package of its own, importing nothing of multifs, so that the
// fake peer (conntest) can be imported by multilink's own tests as well as
// by fsys's: a fake in a package that imports multilink could not be. It
// also carries what a Conn's maker needs of the multilink (BatchSize,
// PeerInfo; multilink names them too), so that the engine, below the
// multilink, depends on this seam alone (make check says so).
//
// Who owns a batch when: the Receiver owns every batch until its Get hands
// one to the Conn for one receive attempt; the Conn then owns it until it
// gives it back, unused, with Put (the attempt found nothing: no buffer is
// held while waiting, so a thousand idle peers hold no buffer memory), or
// hands it over for good with Deliver (frames came: the Receiver forwards
// them and recycles the batch). A Conn never touches a batch after Put or
// Deliver, and has given back every batch it got before Receive returns.
package conn

import (
	"errors"
	"time"
)

// Frame size limits, the reference's: a frame shorter than an Ethernet
// header is dropped, and one up to libvdeplug's VDE_ETHBUFSIZE (a 9216-byte
// jumbo payload, the Ethernet header, an 802.1Q tag) passes whole. A Conn
// receives into buffers of at least MaxFrame bytes.
const (
	MinFrame = 14            // an Ethernet header; anything shorter is dropped
	MaxFrame = 9216 + 14 + 4 // VDE_ETHBUFSIZE; never truncate below this
)

// BatchSize is how many frames one receive or send moves at most: a
// Conn's batches have at most this many buffers.
const BatchSize = 32

// PeerInfo is who a peer is, as learnt at join time (the multilink shows
// it in stats; a Conn's maker, such as a tap's, says it).
type PeerInfo struct {
	Transport   string // "vde", "seqpacket", "stream", "vhost-user" or "tap"
	Description string // the peer's own words (vde-2 request), may be empty
	PID         int32  // SO_PEERCRED of the connecting process
	UID         uint32
	GID         uint32
	Since       time.Time
}

// Batch is the buffers of one receive: a frame per buffer.
type Batch struct {
	// Bufs are the buffers to receive into; the Conn leaves their
	// length and capacity alone.
	Bufs [][]byte
	// Sizes[i] is set by the Conn to the real length of the frame in
	// Bufs[i]: more than len(Bufs[i]) if the frame was truncated.
	Sizes []int
	// Frames is the Receiver's scratch space (capacity len(Bufs)); a
	// Conn does not touch it.
	Frames [][]byte
}

// Receiver is what a Conn receives for: a port's reader.
type Receiver interface {
	// Get returns a batch for one receive attempt, right before it.
	Get() *Batch
	// Put takes back, unused, a batch whose attempt found nothing.
	Put(b *Batch)
	// Deliver hands over b, whose first n buffers hold frames (n >= 1).
	// It may run on another goroutine than Receive's caller (the engine
	// serves all its busy descriptors from one thread), but never twice
	// at once and never after Receive returned.
	Deliver(b *Batch, n int)
}

// Conn is a peer's data channel: one Ethernet frame per message, moved in
// batches. A Conn has one Receive at a time; the multilink serializes
// senders. Close may come from anywhere, at any time.
//
// Errors: Receive returns an error wrapping io.EOF when the peer's side
// ended (a peer that left, or a read side shut down by a multilink.Leaver's
// CloseRead, once what was queued has been taken). After Close, Receive
// and both sends return promptly, with an error that is os.ErrClosed or
// net.ErrClosed (Receive may report io.EOF instead if it saw the end
// first). Any other error is the descriptor's own, a failure.
//
// What a send counts as sent, the peer has accepted: the kernel took it,
// or the peer's own ring holds it (a frame partly written to a stream,
// which the Conn finishes before anything else, counts too). The
// multilink takes those frames as delivered: duplicate suppression then
// drops other links' copies of them. So a Conn must not count a frame it
// may still drop for want of room; one it could not hand over is not sent,
// and the caller drops it (the next copy, from another link, then goes).
type Conn interface {
	// Receive receives frames and delivers them to r, batch by batch
	// (see the package doc for who owns a batch when), until the Conn
	// ends; it returns why.
	Receive(r Receiver) error
	// TrySendBatch sends frames in order until one does not fit, never
	// waiting. It returns how many went, and ErrWouldBlock if the peer's
	// socket was full.
	TrySendBatch(frames [][]byte) (int, error)
	// SendBatchWait is TrySendBatch that waits up to timeout in all for
	// room (< 0: not at all); ErrWouldBlock if the time ran out first.
	SendBatchWait(frames [][]byte, timeout time.Duration) (int, error)
	Close() error
}

// ErrWouldBlock is what a send returns when the peer's socket is full (see
// Conn).
var ErrWouldBlock = errors.New("peer socket full")
