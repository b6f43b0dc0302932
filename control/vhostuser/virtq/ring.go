package virtq

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// MaxQueueSize is the largest split virtqueue.
const MaxQueueSize = 32768

// Descriptor, ring and used flags (virtio 1.x, 2.7).
const (
	descNext     = 1
	descWrite    = 2
	descIndirect = 4

	availNoInterrupt = 1
	usedNoNotify     = 1
)

// Errors of a ring or a chain. Each one is the driver's (the guest's or
// the frontend's) doing, never a reason to touch memory outside the
// table.
var (
	ErrRingSize  = errors.New("ring size not a power of 2 up to 32768")
	ErrRingAddr  = errors.New("ring address misaligned or outside guest memory")
	ErrAvailIdx  = errors.New("available index moved by more than the ring size")
	ErrHead      = errors.New("descriptor index out of range")
	ErrLoop      = errors.New("descriptor chain that meets a descriptor twice (a loop), or longer than the ring or than a frame needs")
	ErrAddr      = errors.New("buffer outside guest memory")
	ErrOverflow  = errors.New("buffer address plus length overflows")
	ErrIndirect  = errors.New("bad indirect descriptor")
	ErrShortHdr  = errors.New("chain shorter than the virtio-net header")
	ErrNoFit     = errors.New("frame larger than the guest's receive buffer")
	errNoBuffers = errors.New("no buffers")
)

// Ring is one split virtqueue as the device sees it: the descriptor
// table, the available ring (the driver's) and the used ring (ours), in
// guest memory, with the device's indices. It is not safe for concurrent
// use: its queue's lock serializes it.
//
// Every index, descriptor and length the driver wrote is read once into
// a local and checked there, since the guest may change it at any time.
// Only the 16-bit ring indices and event fields are shared words, read
// and written atomically; frame bytes are plain copies ordered by them.
type Ring struct {
	mem               *Memory
	num               uint32
	mask              uint16
	desc, avail, used []byte
	descA, availA     uint64 // the frontend's addresses, to translate again
	usedA             uint64
	eventIdx          bool

	lastAvail uint16 // next available entry to take
	availIdx  uint16 // the driver's index as last read
	usedIdx   uint16 // next used entry to fill
	published uint16 // the used index the driver sees
	usedFlags uint16
	fence     atomic.Uint32

	// visit marks the descriptors of the chain being walked, one table
	// at a time, so that a descriptor met twice is a loop however short
	// the frame; visitGen is the current chain's mark (entries holding
	// another value are unvisited), so nothing is cleared per chain.
	visit    []uint32
	visitGen uint32
}

// Setup places the ring of num entries at the frontend's addresses desc,
// avail and used in mem, taking entries from base on. The used index is
// the guest's own: a ring restarted after a disconnection (or a daemon
// restart) resumes where the used ring says, as every entry taken was
// given back in order.
func (r *Ring) Setup(mem *Memory, num uint32, desc, avail, used uint64, base uint16, eventIdx bool) error {
	if num == 0 || num > MaxQueueSize || num&(num-1) != 0 {
		return ErrRingSize
	}
	*r = Ring{num: num, mask: uint16(num - 1), descA: desc, availA: avail, usedA: used, eventIdx: eventIdx}
	if err := r.Remap(mem); err != nil {
		return err
	}
	r.lastAvail = base
	r.usedIdx = r.loadUsedIdx()
	r.published = r.usedIdx
	r.usedFlags = usedNoNotify
	if r.usedIdx != base {
		r.lastAvail = r.usedIdx
	}
	r.availIdx = r.lastAvail
	return nil
}

// Remap places the ring in a new memory table, keeping its indices.
func (r *Ring) Remap(mem *Memory) error {
	n := uint64(r.num)
	// The event fields are read as the aligned 32-bit word holding them:
	// the slices cover those words.
	availLen := (r.availA+6+2*n+3)&^3 - r.availA
	usedLen := 8 + 8*n
	if r.descA%16 != 0 || r.availA%2 != 0 || r.usedA%4 != 0 {
		return ErrRingAddr
	}
	d, a, u := mem.user(r.descA, 16*n), mem.user(r.availA, availLen), mem.user(r.usedA, usedLen)
	if d == nil || a == nil || u == nil {
		return ErrRingAddr
	}
	r.mem, r.desc, r.avail, r.used = mem, d, a, u
	return nil
}

// Base is the next available entry the device will take (GET_VRING_BASE).
func (r *Ring) Base() uint16 { return r.lastAvail }

// SetEventIdx turns VIRTIO_RING_F_EVENT_IDX on or off.
func (r *Ring) SetEventIdx(on bool) { r.eventIdx = on }

// load16 reads the 16-bit field at b[off] atomically, through the
// aligned word that holds it (Remap made b cover that word).
func load16(b []byte, off uint64) uint16 {
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b))) + uintptr(off)
	i := off - uint64(p&3)
	_ = b[i+3]
	w := atomic.LoadUint32((*uint32)(unsafe.Pointer(&b[i])))
	return uint16(w >> ((p & 3) * 8))
}

func (r *Ring) loadAvailIdx() uint16 { return load16(r.avail, 2) }
func (r *Ring) loadUsedIdx() uint16  { return load16(r.used, 2) }
func (r *Ring) usedEvent() uint16    { return load16(r.avail, 4+2*uint64(r.num)) }

// availFlags is read as a plain aligned 16-bit load: its word may start
// before the ring, and the flag is only a hint.
func (r *Ring) availFlags() uint16 { return *(*uint16)(unsafe.Pointer(&r.avail[0])) }

// storeUsed publishes the used ring's flags and index, both ours, as one
// word: a release, and on amd64 a full fence.
func (r *Ring) storeUsed() {
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&r.used[0])), uint32(r.usedFlags)|uint32(r.usedIdx)<<16)
}

// fullFence orders the stores before it with the loads after it.
func (r *Ring) fullFence() { r.fence.Add(1) }

// Avail returns how many entries the driver has made available.
func (r *Ring) Avail() (int, error) {
	idx := r.loadAvailIdx()
	n := idx - r.lastAvail
	if uint32(n) > r.num {
		return 0, ErrAvailIdx
	}
	r.availIdx = idx
	return int(n), nil
}

// pop takes the next available head, if any.
func (r *Ring) pop() (uint16, bool, error) {
	if r.lastAvail == r.availIdx {
		if n, err := r.Avail(); n == 0 {
			return 0, false, err
		}
	}
	slot := uint64(r.lastAvail & r.mask)
	head := binary.LittleEndian.Uint16(r.avail[4+2*slot:])
	r.lastAvail++
	return head, true, nil
}

// putUsed fills the next used entry; Publish makes it the driver's.
func (r *Ring) putUsed(head uint16, n uint32) {
	off := 4 + 8*uint64(r.usedIdx&r.mask)
	binary.LittleEndian.PutUint32(r.used[off:], uint32(head))
	binary.LittleEndian.PutUint32(r.used[off+4:], n)
	r.usedIdx++
}

// Publish gives the driver the used entries filled since the last call,
// and reports whether the driver asked to be told (used_event with
// EVENT_IDX, else the available ring's NO_INTERRUPT flag): then the
// caller signals the call eventfd, once for all of them.
func (r *Ring) Publish() bool {
	if r.usedIdx == r.published {
		return false
	}
	old := r.published
	r.storeUsed()
	r.published = r.usedIdx
	r.fullFence()
	if r.eventIdx {
		ev := r.usedEvent()
		return r.usedIdx-ev-1 < r.usedIdx-old
	}
	return r.availFlags()&availNoInterrupt == 0
}

// EnableNotify asks the driver to kick when it makes its next entry
// available, and reports whether entries came since the device last
// looked (then the caller goes on instead of sleeping, and calls
// DisableNotify). The entries already available may be too few for a
// frame: the kick is asked for the next one, not for those.
func (r *Ring) EnableNotify() (bool, error) {
	seen := r.availIdx
	if r.eventIdx {
		off := 4 + 8*uint64(r.num)
		*(*uint16)(unsafe.Pointer(&r.used[off])) = seen
	} else {
		r.usedFlags &^= usedNoNotify
		r.storeUsed()
	}
	r.fullFence()
	_, err := r.Avail()
	return err == nil && r.availIdx != seen, err
}

// DisableNotify tells the driver not to kick: the device is busy and will
// look again by itself. With EVENT_IDX, leaving avail_event behind does
// that already (the driver kicks only when it passes it).
func (r *Ring) DisableNotify() {
	if !r.eventIdx && r.usedFlags&usedNoNotify == 0 {
		r.usedFlags |= usedNoNotify
		r.storeUsed()
	}
}

// chain walks one descriptor chain, a segment at a time: each
// descriptor's buffer, split where guest memory regions end.
type chain struct {
	mem      *Memory
	table    []byte
	n        uint32 // entries in table
	next     uint32 // the next descriptor's index
	seen     uint32 // descriptors read in this table
	indirect bool
	done     bool
	addr     uint64 // the current descriptor's rest
	left     uint64
	write    bool
	budget   *int   // descriptors the frame may still read (frameBudget)
	ring     *Ring  // whose visit marks the chain uses
	mark     uint32 // this table's visit mark
	total    uint32 // descriptors read in the whole chain, tables together
}

// frameBudget bounds the descriptors read for one frame, across all its
// chains: without it, a guest offering the same long chain of empty
// descriptors at every entry would cost the square of the ring's size.
// An honest frame reads a few: a chain of up to MAX_SKB_FRAGS+2, or one
// per mergeable buffer.
func (r *Ring) frameBudget() int { return 2 * int(max(r.num, 128)) }

func (r *Ring) chain(head uint16, budget *int) chain {
	return chain{mem: r.mem, table: r.desc, n: r.num, next: uint32(head), budget: budget, ring: r, mark: r.nextMark()}
}

// nextMark starts a new set of visited descriptors.
func (r *Ring) nextMark() uint32 {
	if len(r.visit) != int(r.num) {
		r.visit, r.visitGen = make([]uint32, r.num), 0
	}
	r.visitGen++
	if r.visitGen == 0 { // wrapped: old marks could look current
		clear(r.visit)
		r.visitGen = 1
	}
	return r.visitGen
}

// segment returns the next piece of buffer and whether it is
// device-writable; nil at the end of the chain.
func (c *chain) segment() ([]byte, bool, error) {
	for {
		if c.left > 0 {
			b := c.mem.guest(c.addr, c.left)
			if b == nil {
				return nil, false, ErrAddr
			}
			c.addr += uint64(len(b))
			c.left -= uint64(len(b))
			return b, c.write, nil
		}
		if c.done {
			return nil, false, nil
		}
		if c.next >= c.n {
			return nil, false, ErrHead
		}
		// A chain longer than the ring (2.7.4.2: the driver must not
		// make one), or one that meets a descriptor twice, is a loop:
		// the frame is dropped even if it would fit before the loop
		// closes, rather than written over itself.
		if c.seen >= c.n || c.total >= c.ring.num || *c.budget <= 0 || c.ring.visit[c.next] == c.mark {
			return nil, false, ErrLoop
		}
		c.ring.visit[c.next] = c.mark
		c.seen++
		c.total++
		*c.budget--
		d := c.table[16*c.next : 16*c.next+16]
		addr := binary.LittleEndian.Uint64(d)
		n := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])
		if flags&descIndirect != 0 {
			// One level, last in its chain, whole entries (2.7.5.3.1),
			// no more than the ring holds (a longer table is a chain
			// longer than the ring).
			if c.indirect || flags&descNext != 0 || n == 0 || n%16 != 0 || n/16 > c.ring.num {
				return nil, false, ErrIndirect
			}
			t := c.mem.guestExact(addr, uint64(n))
			if t == nil {
				return nil, false, ErrIndirect
			}
			*c = chain{mem: c.mem, table: t, n: n / 16, indirect: true, budget: c.budget,
				ring: c.ring, mark: c.ring.nextMark(), total: c.total}
			continue
		}
		if addr+uint64(n) < addr {
			return nil, false, ErrOverflow
		}
		c.addr, c.left, c.write = addr, uint64(n), flags&descWrite != 0
		if flags&descNext != 0 {
			c.next = uint32(next)
		} else {
			c.done = true
		}
	}
}

// TakeFrame takes the next frame the driver sent: it copies the bytes
// after the hdrLen-byte virtio-net header into buf and returns the
// frame's length, more than len(buf) if it did not fit (the rest is not
// copied: the caller drops such a frame; the chain is still walked to its
// end, checked). ok is false if nothing was available. On a bad chain the
// entry is given back all the same, and err says what was wrong (the
// caller drops the frame). Device-writable descriptors, which a transmit
// chain should not have, are skipped.
func (r *Ring) TakeFrame(buf []byte, hdrLen int) (size int, ok bool, err error) {
	head, ok, err := r.pop()
	if !ok {
		return 0, false, err
	}
	defer r.putUsed(head, 0)
	budget := r.frameBudget()
	c := r.chain(head, &budget)
	skip := hdrLen
	for {
		b, w, err := c.segment()
		if err != nil {
			return 0, true, err
		}
		if b == nil {
			break
		}
		if w {
			continue
		}
		if skip > 0 {
			k := min(skip, len(b))
			skip -= k
			b = b[k:]
		}
		if size < len(buf) {
			copy(buf[size:], b)
		}
		// At most a ring of 4 GiB descriptors: no overflow.
		size += len(b)
	}
	if skip > 0 {
		return 0, true, ErrShortHdr
	}
	return size, true, nil
}

// PutFrame writes one frame, after a virtio-net header of hdrLen bytes,
// into the driver's receive buffers: one chain, or with mrg
// (VIRTIO_NET_F_MRG_RXBUF) as many as it takes, their number in the
// header's num_buffers. ok is false, and nothing taken, if the buffers
// available are not enough (the caller waits for more). On a bad chain
// the chains taken for this frame are given back empty and err says
// why; ErrNoFit is a frame larger than a whole chain without mrg, taking
// nothing. Device-readable descriptors, which a receive chain should not
// have, are skipped.
func (r *Ring) PutFrame(frame []byte, hdrLen int, mrg bool) (ok bool, err error) {
	var hdr [12]byte // flags 0, GSO_NONE: no offloads are negotiated
	hdrLen = min(hdrLen, len(hdr))
	total := hdrLen + len(frame)
	startAvail, startUsed := r.lastAvail, r.usedIdx
	var numBuffers [2][]byte // where header bytes 10 and 11 landed
	off, nbufs := 0, 0
	budget := r.frameBudget()
	for off < total {
		head, ok, perr := r.pop()
		if !ok {
			r.lastAvail, r.usedIdx = startAvail, startUsed
			if perr != nil {
				return false, perr
			}
			return false, nil
		}
		c := r.chain(head, &budget)
		written := 0
		for off < total {
			b, w, err := c.segment()
			if err != nil {
				r.putUsed(head, 0)
				for i := startUsed; i != r.usedIdx; i++ {
					binary.LittleEndian.PutUint32(r.used[4+8*uint64(i&r.mask)+4:], 0)
				}
				return false, err
			}
			if b == nil {
				break
			}
			if !w {
				continue
			}
			k := 0
			for k < len(b) && off < total {
				var m int
				if off < hdrLen {
					m = copy(b[k:], hdr[off:hdrLen])
					for j := 10; j < 12; j++ {
						if j < hdrLen && off <= j && j < off+m {
							numBuffers[j-10] = b[k+j-off : k+j-off+1]
						}
					}
				} else {
					m = copy(b[k:], frame[off-hdrLen:])
				}
				k += m
				off += m
			}
			written += k
		}
		r.putUsed(head, uint32(written))
		nbufs++
		if !mrg && off < total {
			r.lastAvail, r.usedIdx = startAvail, startUsed
			return false, ErrNoFit
		}
	}
	if numBuffers[0] != nil {
		numBuffers[0][0] = byte(nbufs)
	}
	if numBuffers[1] != nil {
		numBuffers[1][0] = byte(nbufs >> 8)
	}
	return true, nil
}

// Discard gives back the available entries unread (a transmit ring that
// is started but disabled: its frames go nowhere), at most a ring's
// worth: a guest that keeps adding entries as fast as they go would
// otherwise hold the queue, and whoever waits for its lock, for as long
// as it likes. more reports whether it stopped at that bound.
func (r *Ring) Discard() (more bool, err error) {
	for range r.num {
		head, ok, err := r.pop()
		if !ok {
			return false, err
		}
		r.putUsed(head, 0)
	}
	return true, nil
}

func (r *Ring) String() string {
	return fmt.Sprintf("ring{num %d avail %d used %d}", r.num, r.lastAvail, r.usedIdx)
}
