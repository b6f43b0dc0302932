package vhostuser

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"multifs/multilink/conn"
)

// The in-test frontend: what QEMU and the guest driver do, in Go. Guest
// memory is a memfd mapped here; its guest addresses start at guestBase
// and its frontend addresses are where it is mapped in this process, as
// in QEMU. Each queue's rings sit at a fixed place in it, and buffers
// are carved from the rest.

const (
	memSize   = 4 << 20
	guestBase = 0x40000000
	qnum      = 256
	// Offsets of the rings of queue i: i*ringStride + ...
	ringStride = 64 << 10
	descOff    = 0
	availOff   = 16 * qnum
	usedOff    = 8 << 10
	bufArea    = 256 << 10
)

type frontend struct {
	t        *testing.T
	memfd    int
	mem      []byte
	sock     int // the frontend's end
	c        *Conn
	served   chan error
	kick     [2]int
	call     [2]int
	availIdx [2]uint16
	usedSeen [2]uint16
	next     uint64 // next free buffer offset
	// noEventIdx: the driver did not negotiate VIRTIO_RING_F_EVENT_IDX
	// and kicks as VRING_USED_F_NO_NOTIFY says.
	noEventIdx bool
	logs       *test.Hook
}

// newFrontend makes a Conn on a socketpair and a frontend with its guest
// memory; Serve runs until the test ends.
func newFrontend(t *testing.T) *frontend {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[1]), "backend")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	lg, hook := test.NewNullLogger()
	lg.SetLevel(logrus.DebugLevel)
	c, err := New(nc.(*net.UnixConn), logrus.NewEntry(lg))
	if err != nil {
		t.Fatal(err)
	}
	fe := &frontend{t: t, sock: fds[0], c: c, served: make(chan error, 1), next: bufArea, logs: hook}
	fe.memfd, err = unix.MemfdCreate("guest", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fe.memfd, memSize); err != nil {
		t.Fatal(err)
	}
	fe.mem, err = unix.Mmap(fe.memfd, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	for i := range fe.kick {
		fe.kick[i], _ = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		fe.call[i], _ = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	}
	go func() { fe.served <- c.Serve() }()
	t.Cleanup(func() {
		c.Close()
		unix.Close(fe.sock)
		select {
		case <-fe.served:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not end after Close")
		}
		unix.Munmap(fe.mem)
		unix.Close(fe.memfd)
		for i := range fe.kick {
			unix.Close(fe.kick[i])
			unix.Close(fe.call[i])
		}
	})
	return fe
}

func (fe *frontend) uva(off uint64) uint64 {
	return uint64(uintptr(unsafe.Pointer(&fe.mem[0]))) + off
}

// send sends one request with descriptors; with need, asks for REPLY_ACK.
func (fe *frontend) send(req uint32, payload []byte, fds ...int) {
	fe.t.Helper()
	fe.sendFlags(req, flagVersion, payload, fds...)
}

func (fe *frontend) sendFlags(req, flags uint32, payload []byte, fds ...int) {
	fe.t.Helper()
	b := make([]byte, HeaderLen+len(payload))
	binary.NativeEndian.PutUint32(b, req)
	binary.NativeEndian.PutUint32(b[4:], flags)
	binary.NativeEndian.PutUint32(b[8:], uint32(len(payload)))
	copy(b[HeaderLen:], payload)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fe.sock, b, oob, nil, 0); err != nil {
		fe.t.Fatalf("send %s: %v", reqName(req), err)
	}
}

// reply reads one reply to req and returns its payload.
func (fe *frontend) reply(req uint32) []byte {
	fe.t.Helper()
	unix.SetsockoptTimeval(fe.sock, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	var h [HeaderLen]byte
	if _, err := io.ReadFull(fdReader(fe.sock), h[:]); err != nil {
		fe.t.Fatalf("reply to %s: %v", reqName(req), err)
	}
	if r := binary.NativeEndian.Uint32(h[:]); r != req {
		fe.t.Fatalf("reply to %s is for %s", reqName(req), reqName(r))
	}
	if fl := binary.NativeEndian.Uint32(h[4:]); fl != flagVersion|flagReply {
		fe.t.Fatalf("reply flags 0x%x", fl)
	}
	p := make([]byte, binary.NativeEndian.Uint32(h[8:]))
	if _, err := io.ReadFull(fdReader(fe.sock), p); err != nil {
		fe.t.Fatal(err)
	}
	return p
}

type fdReader int

func (r fdReader) Read(b []byte) (int, error) {
	n, err := unix.Read(int(r), b)
	for err == unix.EINTR {
		n, err = unix.Read(int(r), b)
	}
	if n == 0 && err == nil {
		return 0, io.EOF
	}
	if n < 0 {
		n = 0
	}
	return n, err
}

// ack sends a request with need_reply and returns REPLY_ACK's status.
func (fe *frontend) ack(req uint32, payload []byte, fds ...int) uint64 {
	fe.t.Helper()
	fe.sendFlags(req, flagVersion|flagNeedReply, payload, fds...)
	return binary.NativeEndian.Uint64(fe.reply(req))
}

func u64(v uint64) []byte                  { return u64Payload(v) }
func state(i, n uint32) []byte             { return statePayload(i, n) }
func (fe *frontend) ringBase(q int) uint64 { return uint64(q) * ringStride }

func (fe *frontend) addrPayload(q int, desc, avail, used uint64) []byte {
	b := make([]byte, vringAddrLen)
	binary.NativeEndian.PutUint32(b, uint32(q))
	binary.NativeEndian.PutUint64(b[8:], desc)
	binary.NativeEndian.PutUint64(b[16:], used)
	binary.NativeEndian.PutUint64(b[24:], avail)
	return b
}

func memTablePayload(regions ...[4]uint64) []byte {
	b := make([]byte, memTableHeaderLen+memTableRegionLen*len(regions))
	binary.NativeEndian.PutUint32(b, uint32(len(regions)))
	for i, r := range regions {
		for j, v := range r {
			binary.NativeEndian.PutUint64(b[memTableHeaderLen+i*memTableRegionLen+8*j:], v)
		}
	}
	return b
}

// start does what QEMU does to start the device, with features.
func (fe *frontend) start(features uint64) {
	fe.t.Helper()
	fe.noEventIdx = features&fRingEventIdx == 0
	fe.send(reqGetFeatures, nil)
	if got := binary.NativeEndian.Uint64(fe.reply(reqGetFeatures)); got != offeredFeatures {
		fe.t.Fatalf("features 0x%x", got)
	}
	fe.send(reqGetProtocolFeatures, nil)
	fe.reply(reqGetProtocolFeatures)
	fe.send(reqSetProtocolFeatures, u64(protoMQ|protoReplyAck))
	fe.send(reqGetQueueNum, nil)
	if n := binary.NativeEndian.Uint64(fe.reply(reqGetQueueNum)); n != 1 {
		fe.t.Fatalf("queue pairs %d", n)
	}
	fe.send(reqSetOwner, nil)
	if st := fe.ack(reqSetFeatures, u64(features)); st != 0 {
		fe.t.Fatalf("SET_FEATURES refused")
	}
	if st := fe.ack(reqSetMemTable, memTablePayload([4]uint64{guestBase, memSize, fe.uva(0), 0}), fe.memfd); st != 0 {
		fe.t.Fatalf("SET_MEM_TABLE refused")
	}
	for q := 0; q < 2; q++ {
		fe.send(reqSetVringNum, state(uint32(q), qnum))
		fe.send(reqSetVringBase, state(uint32(q), 0))
		b := fe.ringBase(q)
		if st := fe.ack(reqSetVringAddr, fe.addrPayload(q, fe.uva(b+descOff), fe.uva(b+availOff), fe.uva(b+usedOff))); st != 0 {
			fe.t.Fatalf("SET_VRING_ADDR refused")
		}
		fe.send(reqSetVringKick, u64(uint64(q)), fe.kick[q])
		fe.send(reqSetVringCall, u64(uint64(q)), fe.call[q])
		if st := fe.ack(reqSetVringEnable, state(uint32(q), 1)); st != 0 {
			fe.t.Fatalf("SET_VRING_ENABLE refused")
		}
	}
}

const stdFeatures = fVersion1 | fNetMrgRxbuf | fRingEventIdx | fRingIndirectDesc | fProtocolFeatures

// Guest memory accessors, by offset.
func (fe *frontend) put16(off uint64, v uint16) { binary.LittleEndian.PutUint16(fe.mem[off:], v) }
func (fe *frontend) put32(off uint64, v uint32) { binary.LittleEndian.PutUint32(fe.mem[off:], v) }
func (fe *frontend) put64(off uint64, v uint64) { binary.LittleEndian.PutUint64(fe.mem[off:], v) }
func (fe *frontend) get16(off uint64) uint16    { return binary.LittleEndian.Uint16(fe.mem[off:]) }
func (fe *frontend) get32(off uint64) uint32    { return binary.LittleEndian.Uint32(fe.mem[off:]) }

// alloc returns the offset of n fresh bytes of buffer space.
func (fe *frontend) alloc(n int) uint64 {
	off := (fe.next + 15) &^ 15
	fe.next = off + uint64(n)
	if fe.next > memSize {
		fe.t.Fatal("guest buffer space exhausted")
	}
	return off
}

// setDesc writes descriptor i of a table at off.
func (fe *frontend) setDesc(table uint64, i int, addr uint64, n uint32, flags, next uint16) {
	d := table + 16*uint64(i)
	fe.put64(d, addr)
	fe.put32(d+8, n)
	fe.put16(d+12, flags)
	fe.put16(d+14, next)
}

// offer puts head in queue q's available ring; kick, if the driver would
// (vring_need_event against avail_event, as Linux does with EVENT_IDX),
// and reports whether it kicked.
func (fe *frontend) offer(q int, head uint16, kick bool) bool {
	b := fe.ringBase(q)
	idx := fe.availIdx[q]
	fe.put16(b+availOff+4+2*uint64(idx%qnum), head)
	fe.availIdx[q] = idx + 1
	fe.put16(b+availOff+2, idx+1) // x86: stores are ordered
	if !kick {
		return false
	}
	if fe.noEventIdx {
		// VRING_USED_F_NO_NOTIFY instead.
		if fe.get16(b+usedOff)&1 == 0 {
			fe.doKick(q)
			return true
		}
		return false
	}
	ev := fe.get16(b + usedOff + 4 + 8*qnum)
	if uint16(idx+1-ev-1) < uint16(1) {
		fe.doKick(q)
		return true
	}
	return false
}

func (fe *frontend) doKick(q int) {
	unix.Write(fe.kick[q], []byte{1, 0, 0, 0, 0, 0, 0, 0})
}

// usedIdx is the device's used index of queue q.
func (fe *frontend) usedIdx(q int) uint16 { return fe.get16(fe.ringBase(q) + usedOff + 2) }

// used returns used entry i of queue q.
func (fe *frontend) used(q int, i uint16) (id, n uint32) {
	off := fe.ringBase(q) + usedOff + 4 + 8*uint64(i%qnum)
	return fe.get32(off), fe.get32(off + 4)
}

// setUsedEvent sets queue q's used_event (when to be interrupted).
func (fe *frontend) setUsedEvent(q int, v uint16) { fe.put16(fe.ringBase(q)+availOff+4+2*qnum, v) }

// calls reads (and resets) how many times queue q's call was signalled.
func (fe *frontend) calls(q int) uint64 {
	var b [8]byte
	if n, _ := unix.Read(fe.call[q], b[:]); n != 8 {
		return 0
	}
	return binary.NativeEndian.Uint64(b[:])
}

// transmit makes a TX chain for frame (a 12-byte header then the frame,
// in one descriptor at descriptor slot head) and offers it.
func (fe *frontend) transmit(head uint16, frame []byte, kick bool) bool {
	buf := fe.alloc(12 + len(frame))
	copy(fe.mem[buf:], make([]byte, 12))
	copy(fe.mem[buf+12:], frame)
	fe.setDesc(fe.ringBase(txQueue)+descOff, int(head), guestBase+buf, uint32(12+len(frame)), 0, 0)
	return fe.offer(txQueue, head, kick)
}

// postRX posts n receive buffers of size bytes, at descriptor slots from
// first on.
func (fe *frontend) postRX(first, n, size int) {
	for i := 0; i < n; i++ {
		buf := fe.alloc(size)
		fe.setDesc(fe.ringBase(rxQueue)+descOff, first+i, guestBase+buf, uint32(size), descWrite, 0)
		fe.offer(rxQueue, uint16(first+i), true)
	}
}

// rxBytes returns the bytes the device wrote into used entry i of the
// receive queue (one descriptor chains).
func (fe *frontend) rxBytes(i uint16) []byte {
	id, n := fe.used(rxQueue, i)
	d := fe.ringBase(rxQueue) + descOff + 16*uint64(id)
	addr := binary.LittleEndian.Uint64(fe.mem[d:]) - guestBase
	return fe.mem[addr : addr+uint64(n)]
}

// receiver is a conn.Receiver collecting copies of the frames delivered.
type receiver struct {
	mu     sync.Mutex
	frames [][]byte
	sizes  []int
	got    chan struct{}
}

func newReceiver() *receiver { return &receiver{got: make(chan struct{}, 1024)} }

func (r *receiver) Get() *conn.Batch {
	b := &conn.Batch{Bufs: make([][]byte, 32), Sizes: make([]int, 32)}
	for i := range b.Bufs {
		b.Bufs[i] = make([]byte, 9235)
	}
	return b
}
func (r *receiver) Put(*conn.Batch) {}
func (r *receiver) Deliver(b *conn.Batch, n int) {
	r.mu.Lock()
	for i := 0; i < n; i++ {
		s := b.Sizes[i]
		r.sizes = append(r.sizes, s)
		r.frames = append(r.frames, append([]byte(nil), b.Bufs[i][:min(s, len(b.Bufs[i]))]...))
	}
	r.mu.Unlock()
	r.got <- struct{}{}
}

// waitFrames waits until n frames were delivered, and returns them.
func (r *receiver) waitFrames(t *testing.T, n int) ([][]byte, []int) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		if len(r.frames) >= n {
			f, s := r.frames, r.sizes
			r.mu.Unlock()
			return f, s
		}
		r.mu.Unlock()
		select {
		case <-r.got:
		case <-deadline:
			t.Fatalf("%d frames delivered, want %d", len(r.frames), n)
		}
	}
}

// receive runs c.Receive until the test ends.
func (fe *frontend) receive() *receiver {
	r := newReceiver()
	done := make(chan error, 1)
	go func() { done <- fe.c.Receive(r) }()
	fe.t.Cleanup(func() {
		fe.c.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			fe.t.Error("Receive did not end after Close")
		}
	})
	return r
}

func frame(n int, seed byte) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = seed + byte(i*7)
	}
	return f
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

var _ = bytes.Equal

// dupMem returns a throwaway memfd mapping, for a frontend whose memory
// was borrowed to be released by its owner.
func dupMem(t *testing.T) (int, []byte) {
	fd, err := unix.MemfdCreate("spare", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	unix.Ftruncate(fd, 4096)
	m, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	return fd, m
}

// Descriptor flags, as the driver writes them.
const (
	descNext     = 1
	descWrite    = 2
	descIndirect = 4
)
