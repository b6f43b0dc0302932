package main

// Guest memory and the driver side of virtio split rings (virtio 1.x
// §2.7): what a guest's virtio-net driver does, over a memfd shared with
// the backend.

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	descNext     = 1
	descWrite    = 2
	descIndirect = 4

	availNoInterrupt = 1

	netHdrLen = 12 // virtio_net_hdr_v1 (VERSION_1): num_buffers included
)

// The guest's memory: one memfd, mapped here, seen by the backend as one
// region at guestBase (guest physical) and fakeVA (the "QEMU virtual
// address" ring addresses are given in). Both differ from each other and
// from the offset in the memfd, so a backend that mixes them up misses.
const (
	guestBase = 0x1_0000_0000
	fakeVA    = 0x7f12_3400_0000
	memSize   = 8 << 20

	queueSize = 256
	rxBufSize = 16384
	txBufSize = 10240

	// The layout inside the memory.
	q0Desc  = 0x0000
	q0Avail = 0x1000
	q0Used  = 0x2000
	q1Desc  = 0x4000
	q1Avail = 0x5000
	q1Used  = 0x6000
	scratch = 0x8000 // indirect tables and the hostile cases' own data
	rxBufs  = 0x10000
	txBufs  = rxBufs + queueSize*rxBufSize
)

type guestMem struct {
	fd  int
	mem []byte
}

func newGuestMem(size int) (*guestMem, error) {
	fd, err := unix.MemfdCreate("vhostprobe-guest", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, err
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &guestMem{fd: fd, mem: mem}, nil
}

func (g *guestMem) free() {
	unix.Munmap(g.mem)
	unix.Close(g.fd)
}

func (g *guestMem) table() []region {
	return []region{{gpa: guestBase, size: uint64(len(g.mem)), uaddr: fakeVA, offset: 0}}
}

func gpa(off int) uint64 { return guestBase + uint64(off) }
func va(off int) uint64  { return fakeVA + uint64(off) }

func (g *guestMem) u16p(off int) *uint32 {
	// u16 fields are read and published through the aligned u32 that
	// holds them (flags+idx of the avail and used rings), so the publish
	// is one atomic store: the backend sees the entries before the index.
	return (*uint32)(unsafe.Pointer(&g.mem[off&^3]))
}

func (g *guestMem) putDesc(table, i int, addr uint64, l uint32, flags, next uint16) {
	d := g.mem[table+16*i:]
	binary.LittleEndian.PutUint64(d[0:], addr)
	binary.LittleEndian.PutUint32(d[8:], l)
	binary.LittleEndian.PutUint16(d[12:], flags)
	binary.LittleEndian.PutUint16(d[14:], next)
}

// vq is the driver side of one split virtqueue.
type vq struct {
	g                  *guestMem
	index              uint32
	num                int
	desc, avail, used  int // offsets in g
	availIdx, lastUsed uint16
	kick, call         int // eventfds
}

func newVQ(g *guestMem, index uint32, num, desc, avail, used int) (*vq, error) {
	k, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	c, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(k)
		return nil, err
	}
	return &vq{g: g, index: index, num: num, desc: desc, avail: avail, used: used, kick: k, call: c}, nil
}

func (q *vq) closeFDs() {
	unix.Close(q.kick)
	unix.Close(q.call)
}

// setup tells the backend about the ring: num, base, addresses, call and
// kick eventfds, then enables it when protocol features are on.
func (q *vq) setup(c *conn, enable bool) error {
	steps := []struct {
		req uint32
		p   []byte
		fds []int
	}{
		{reqSetVringCall, u64(uint64(q.index)), []int{q.call}},
		{reqSetVringNum, vringState(q.index, uint32(q.num)), nil},
		{reqSetVringBase, vringState(q.index, 0), nil},
		{reqSetVringAddr, vringAddr(q.index, va(q.desc), va(q.used), va(q.avail)), nil},
		{reqSetVringKick, u64(uint64(q.index)), []int{q.kick}},
	}
	if enable {
		steps = append(steps, struct {
			req uint32
			p   []byte
			fds []int
		}{reqSetVringEnable, vringState(q.index, 1), nil})
	}
	for _, s := range steps {
		if err := c.send(s.req, s.p, s.fds...); err != nil {
			return fmt.Errorf("ring %d request %d: %w", q.index, s.req, err)
		}
	}
	return nil
}

// post makes head available (one more entry in the avail ring) without
// kicking.
func (q *vq) post(head uint16) {
	binary.LittleEndian.PutUint16(q.g.mem[q.avail+4+2*int(q.availIdx%uint16(q.num)):], head)
	q.availIdx++
	q.publishAvail(q.availIdx)
}

// publishAvail stores avail.idx (and flags 0) atomically.
func (q *vq) publishAvail(idx uint16) {
	atomic.StoreUint32(q.g.u16p(q.avail), uint32(idx)<<16)
}

// setUsedEvent writes used_event (EVENT_IDX): call me once the used index
// passes v.
func (q *vq) setUsedEvent(v uint16) {
	binary.LittleEndian.PutUint16(q.g.mem[q.avail+4+2*q.num:], v)
}

func (q *vq) usedIdx() uint16 { return uint16(atomic.LoadUint32(q.g.u16p(q.used)) >> 16) }

// popUsed returns the next used element, if any.
func (q *vq) popUsed() (id, l uint32, ok bool) {
	if q.usedIdx() == q.lastUsed {
		return 0, 0, false
	}
	e := q.g.mem[q.used+4+8*int(q.lastUsed%uint16(q.num)):]
	q.lastUsed++
	return binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:]), true
}

// needKick says whether the device asked to be notified of the avail
// entries from old to q.availIdx: with EVENT_IDX when avail_event (after
// the used ring) falls in [old, new), else when VRING_USED_F_NO_NOTIFY is
// clear (virtio 1.x 2.7.10.2), as a guest's driver decides.
func (q *vq) needKick(old uint16, eventIdx bool) bool {
	w := atomic.LoadUint32(q.g.u16p(q.used))
	if eventIdx {
		ev := binary.LittleEndian.Uint16(q.g.mem[q.used+4+8*q.num:])
		return q.availIdx-ev-1 < q.availIdx-old
	}
	return w&1 == 0
}

func (q *vq) doKick() error {
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	_, err := unix.Write(q.kick, one[:])
	if err == unix.EAGAIN {
		return nil // the counter is full: a kick is pending anyway
	}
	return err
}

// waitCall waits up to d for the backend's call (or returns at once if
// the used ring moved).
func (q *vq) waitCall(d time.Duration) {
	if q.usedIdx() != q.lastUsed {
		return
	}
	fds := []unix.PollFd{{Fd: int32(q.call), Events: unix.POLLIN}}
	unix.Poll(fds, int(d.Milliseconds()))
	var b [8]byte
	unix.Read(q.call, b[:])
}
