package vhostuser

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"multifs/multilink/conn"
)

// The guest transmits frames: Receive delivers them without their
// virtio-net header, and gives the buffers back (used ring, call).
func TestTransmitToHost(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures)
	r := fe.receive()
	want := [][]byte{frame(60, 1), frame(1514, 2), frame(9234, 3)}
	for i, f := range want {
		fe.transmit(uint16(i), f, true)
	}
	got, _ := r.waitFrames(t, len(want))
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("frame %d: %d bytes, differs from the %d sent", i, len(got[i]), len(want[i]))
		}
	}
	waitFor(t, "used index 3", func() bool { return fe.usedIdx(txQueue) == 3 })
	for i := uint16(0); i < 3; i++ {
		if id, _ := fe.used(txQueue, i); id != uint32(i) {
			t.Fatalf("used entry %d is head %d", i, id)
		}
	}
}

// Frames to the guest land in its receive buffers after a virtio-net
// header whose num_buffers is 1; the guest is signalled.
func TestSendToGuest(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures)
	fe.postRX(0, 8, 2048)
	frames := [][]byte{frame(60, 4), frame(1514, 5)}
	n, err := fe.c.SendBatchWait(frames, 0)
	if n != 2 || err != nil {
		t.Fatalf("sent %d, %v", n, err)
	}
	if fe.usedIdx(rxQueue) != 2 {
		t.Fatalf("used index %d", fe.usedIdx(rxQueue))
	}
	for i, f := range frames {
		b := fe.rxBytes(uint16(i))
		if len(b) != 12+len(f) || !bytes.Equal(b[12:], f) {
			t.Fatalf("buffer %d: %d bytes", i, len(b))
		}
		if nb := binary.LittleEndian.Uint16(b[10:]); nb != 1 || !bytes.Equal(b[:10], make([]byte, 10)) {
			t.Fatalf("header % x", b[:12])
		}
	}
	waitFor(t, "a call", func() bool { return fe.calls(rxQueue) > 0 })
}

// With no buffers posted, a send would block; it goes once the guest
// posts some (its kick wakes the waiting sender), with EVENT_IDX or the
// NO_NOTIFY flag.
func TestSendWaitsForBuffers(t *testing.T) {
	t.Run("event_idx", func(t *testing.T) { testSendWaitsForBuffers(t, stdFeatures) })
	t.Run("no_notify", func(t *testing.T) { testSendWaitsForBuffers(t, stdFeatures&^fRingEventIdx) })
}

func testSendWaitsForBuffers(t *testing.T, features uint64) {
	fe := newFrontend(t)
	fe.start(features)
	if n, err := fe.c.TrySendBatch([][]byte{frame(60, 1)}); n != 0 || !errors.Is(err, conn.ErrWouldBlock) {
		t.Fatalf("no buffers: sent %d, %v", n, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := fe.c.SendBatchWait([][]byte{frame(60, 1)}, 5e9)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // the sender waits
	start := time.Now()
	fe.postRX(0, 1, 2048)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the sender took %v to see the buffer: no kick woke it", d)
	}
	if fe.usedIdx(rxQueue) != 1 {
		t.Fatalf("used index %d", fe.usedIdx(rxQueue))
	}
}

// A 9234-byte frame across 1024-byte mergeable buffers: ten of them,
// num_buffers 10 in the first, the bytes in order.
func TestMergeableJumbo(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures)
	fe.postRX(0, 16, 1024)
	f := frame(9234, 9)
	if n, err := fe.c.TrySendBatch([][]byte{f}); n != 1 || err != nil {
		t.Fatalf("sent %d, %v", n, err)
	}
	if u := fe.usedIdx(rxQueue); u != 10 {
		t.Fatalf("%d buffers used, want 10", u)
	}
	var all []byte
	for i := uint16(0); i < 10; i++ {
		all = append(all, fe.rxBytes(i)...)
	}
	if nb := binary.LittleEndian.Uint16(all[10:]); nb != 10 {
		t.Fatalf("num_buffers %d", nb)
	}
	if !bytes.Equal(all[12:], f) {
		t.Fatal("frame differs")
	}
	// Six buffers left, not enough for another: nothing taken.
	if n, err := fe.c.TrySendBatch([][]byte{f}); n != 0 || !errors.Is(err, conn.ErrWouldBlock) {
		t.Fatalf("sent %d, %v", n, err)
	}
	if u := fe.usedIdx(rxQueue); u != 10 {
		t.Fatalf("used index moved to %d", u)
	}
	// A small frame still fits.
	if n, err := fe.c.TrySendBatch([][]byte{frame(100, 1)}); n != 1 || err != nil {
		t.Fatalf("sent %d, %v", n, err)
	}
}

// Without MRG_RXBUF a frame larger than a buffer is dropped with an
// error, taking no buffer; the next one goes.
func TestNoMergeableTooBig(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures &^ fNetMrgRxbuf)
	fe.postRX(0, 4, 1526)
	n, err := fe.c.TrySendBatch([][]byte{frame(9234, 1), frame(60, 2)})
	if n != 0 || !errors.Is(err, ErrFrameDropped) {
		t.Fatalf("sent %d, %v", n, err)
	}
	if n, err := fe.c.TrySendBatch([][]byte{frame(1514, 2)}); n != 1 || err != nil {
		t.Fatalf("sent %d, %v", n, err)
	}
	if fe.c.Faults() != 0 {
		t.Fatalf("%d faults", fe.c.Faults())
	}
}

// EVENT_IDX: a burst costs a bounded number of signals both ways, not
// one per frame. The guest wants an interrupt at the first used entry
// only (used_event 0, as a NAPI driver that then polls); and it kicks
// only when the device's avail_event says so.
func TestEventIdxSuppression(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures)
	fe.postRX(0, qnum, 1600)
	// A call descriptor set is signalled once (a signal owed to the one
	// it replaced): take that one first.
	waitFor(t, "the first signal", func() bool { return fe.calls(rxQueue) == 1 })
	before := signalCount.Load()
	const burst = 200
	for i := 0; i < burst; i += 20 {
		var fs [][]byte
		for j := 0; j < 20; j++ {
			fs = append(fs, frame(100, byte(i+j)))
		}
		if n, err := fe.c.TrySendBatch(fs); n != 20 || err != nil {
			t.Fatalf("sent %d, %v", n, err)
		}
	}
	waitFor(t, "the signal", func() bool { return signalCount.Load() > before })
	if got := fe.usedIdx(rxQueue); got != burst {
		t.Fatalf("used %d", got)
	}
	rxCalls := fe.calls(rxQueue)
	if rxCalls != 1 {
		t.Fatalf("%d receive calls for %d frames in %d batches, want 1", rxCalls, burst, burst/20)
	}

	// Transmit: the guest offers a burst, kicking only as told.
	r := fe.receive()
	kicks := 0
	fe.setUsedEvent(txQueue, 0)
	for i := 0; i < burst; i++ {
		if fe.transmit(uint16(i%qnum), frame(80, byte(i)), true) {
			kicks++
		}
		if i%50 == 49 {
			r.waitFrames(t, i+1) // the guest's ring is 256: let it drain
		}
	}
	r.waitFrames(t, burst)
	t.Logf("transmit: %d frames, %d kicks; receive: %d frames, %d calls", burst, kicks, burst, rxCalls)
	if kicks > burst/10 {
		t.Fatalf("%d kicks for %d frames: notifications not suppressed", kicks, burst)
	}
}

// Indirect descriptors, both ways, a frame split across the table's
// entries.
func TestIndirect(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures)
	r := fe.receive()
	f := frame(1000, 3)
	// TX: table of 3: header (12), 400 bytes, the rest.
	tbl := fe.alloc(48)
	hdr, a, b := fe.alloc(12), fe.alloc(400), fe.alloc(600)
	copy(fe.mem[a:], f[:400])
	copy(fe.mem[b:], f[400:])
	fe.setDesc(tbl, 0, guestBase+hdr, 12, descNext, 1)
	fe.setDesc(tbl, 1, guestBase+a, 400, descNext, 2)
	fe.setDesc(tbl, 2, guestBase+b, 600, 0, 0)
	fe.setDesc(fe.ringBase(txQueue)+descOff, 7, guestBase+tbl, 48, descIndirect, 0)
	fe.offer(txQueue, 7, true)
	got, _ := r.waitFrames(t, 1)
	if !bytes.Equal(got[0], f) {
		t.Fatal("indirect transmit: frame differs")
	}
	// RX: table of 2 writable buffers of 512.
	tbl = fe.alloc(32)
	a, b = fe.alloc(512), fe.alloc(512)
	fe.setDesc(tbl, 0, guestBase+a, 512, descWrite|descNext, 1)
	fe.setDesc(tbl, 1, guestBase+b, 512, descWrite, 0)
	fe.setDesc(fe.ringBase(rxQueue)+descOff, 3, guestBase+tbl, 32, descIndirect, 0)
	fe.offer(rxQueue, 3, true)
	if n, err := fe.c.TrySendBatch([][]byte{f}); n != 1 || err != nil {
		t.Fatalf("sent %d, %v", n, err)
	}
	if id, n := fe.used(rxQueue, 0); id != 3 || n != 1012 {
		t.Fatalf("used %d %d", id, n)
	}
	all := append(append([]byte(nil), fe.mem[a:a+512]...), fe.mem[b:b+500]...)
	if !bytes.Equal(all[12:], f) {
		t.Fatal("indirect receive: frame differs")
	}
}

// GET_VRING_BASE stops the ring and says where: kicks are then ignored
// until it is started again, from there.
func TestGetVringBase(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures)
	r := fe.receive()
	for i := 0; i < 5; i++ {
		fe.transmit(uint16(i), frame(60, byte(i)), true)
	}
	r.waitFrames(t, 5)
	fe.send(reqGetVringBase, state(txQueue, 0))
	p := fe.reply(reqGetVringBase)
	if idx, num := binary.NativeEndian.Uint32(p), binary.NativeEndian.Uint32(p[4:]); idx != txQueue || num != 5 {
		t.Fatalf("GET_VRING_BASE: %d %d", idx, num)
	}
	fe.transmit(5, frame(60, 5), false)
	fe.doKick(txQueue)
	fe.send(reqGetFeatures, nil) // a round trip: the kick had time
	fe.reply(reqGetFeatures)
	if fe.usedIdx(txQueue) != 5 {
		t.Fatal("a stopped ring was processed")
	}
	// Restart from 5, with a new kick descriptor, as QEMU does.
	fe.send(reqSetVringBase, state(txQueue, 5))
	fe.send(reqSetVringKick, u64(txQueue), fe.kick[txQueue])
	r.waitFrames(t, 6)
	if fe.usedIdx(txQueue) != 6 {
		t.Fatalf("used %d", fe.usedIdx(txQueue))
	}
	if _, err := fe.c.TrySendBatch([][]byte{frame(60, 0)}); !errors.Is(err, conn.ErrWouldBlock) {
		t.Fatalf("send with no buffers: %v", err)
	}
}

// A frontend that reconnects (QEMU's reconnect=, or the daemon
// restarted) sets the rings up again on the same guest memory: the ring
// resumes at the guest's used index, whatever base it is told, and the
// frames flow again.
func TestReconnectResumes(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures)
	r := fe.receive()
	for i := 0; i < 3; i++ {
		fe.transmit(uint16(i), frame(60, byte(i)), true)
	}
	r.waitFrames(t, 3)
	fe.postRX(0, 4, 2048)
	if n, _ := fe.c.TrySendBatch([][]byte{frame(60, 1)}); n != 1 {
		t.Fatal("send")
	}

	// A second connection on the same guest memory (the first one's
	// backend gone with its state): QEMU tells base 0, the guest's used
	// ring says 3 and 1.
	fe2 := newFrontend(t)
	unix.Munmap(fe2.mem)
	unix.Close(fe2.memfd)
	fe2.mem, fe2.memfd = fe.mem, fe.memfd
	fe2.availIdx = fe.availIdx
	fe2.next = fe.next
	fe.c.Close()
	fe2.start(stdFeatures)
	r2 := fe2.receive()
	fe2.transmit(3, frame(70, 7), true)
	got, _ := r2.waitFrames(t, 1)
	if !bytes.Equal(got[0], frame(70, 7)) {
		t.Fatal("frame after reconnect differs")
	}
	if u := fe2.usedIdx(txQueue); u != 4 {
		t.Fatalf("transmit used index %d, want 4", u)
	}
	if n, err := fe2.c.TrySendBatch([][]byte{frame(60, 2)}); n != 1 || err != nil {
		t.Fatalf("send after reconnect: %d %v", n, err)
	}
	if u := fe2.usedIdx(rxQueue); u != 2 {
		t.Fatalf("receive used index %d, want 2", u)
	}
	// fe2 must not unmap fe's memory twice.
	fe2.memfd, fe2.mem = dupMem(t)
}

// mappings counts this process's mappings of the test's guest memfds.
func mappings(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "/memfd:guest")
}

// A new memory table while frames flow both ways: the old one is
// unmapped only once no ring uses it, nothing faults, frames go on; and
// Close unmaps all.
func TestMemTableReplacedWhileRunning(t *testing.T) {
	fe := newFrontend(t)
	base := mappings(t) // the frontend's own
	fe.start(stdFeatures)
	if got := mappings(t); got != base+1 {
		t.Fatalf("%d mappings after SET_MEM_TABLE, want %d", got, base+1)
	}
	r := fe.receive()
	stop := make(chan struct{})
	sent := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				sent <- n
				return
			default:
			}
			k, _ := fe.c.TrySendBatch([][]byte{frame(60, 1)})
			n += k
		}
	}()
	fe.postRX(0, 200, 2048)
	table := memTablePayload([4]uint64{guestBase, memSize, fe.uva(0), 0})
	for i := 0; i < 100; i++ {
		if st := fe.ack(reqSetMemTable, table, fe.memfd); st != 0 {
			t.Fatal("SET_MEM_TABLE refused")
		}
		if i < 50 {
			fe.transmit(uint16(i), frame(60, byte(i)), true)
		}
	}
	waitFor(t, "200 frames in the guest", func() bool { return fe.usedIdx(rxQueue) == 200 })
	close(stop)
	if n := <-sent; n != 200 {
		t.Fatalf("%d frames sent into 200 buffers", n)
	}
	r.waitFrames(t, 50)
	if got := mappings(t); got != base+1 {
		t.Fatalf("%d mappings after 100 tables, want %d", got, base+1)
	}
	if fe.c.Faults() != 0 {
		t.Fatalf("%d faults", fe.c.Faults())
	}
	fe.c.Close()
	if got := mappings(t); got != base {
		t.Fatalf("%d mappings after Close, want %d", got, base)
	}
}

// Without EVENT_IDX the device suppresses kicks with
// VRING_USED_F_NO_NOTIFY: asked for only when it found a ring empty,
// withdrawn as soon as it has work again, so a driver adding entries
// while the device is busy does not kick.
func TestNoNotifyWhileBusy(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures &^ fRingEventIdx)
	kicks := func(q int, n int, add func(i int) bool) int {
		k := 0
		for i := 0; i < n; i++ {
			if add(i) {
				k++
			}
		}
		return k
	}
	r := newReceiver()
	tx := &fe.c.q[txQueue]

	// Transmit: found empty, kicks are asked for; the guest's first
	// entries kick; once the device took them, the next ones do not.
	if wait, err := fe.c.receiveOnce(tx, r); !wait || err != nil {
		t.Fatalf("empty ring: wait %v, %v", wait, err)
	}
	if k := kicks(txQueue, 10, func(i int) bool { return fe.transmit(uint16(i), frame(60, 1), true) }); k == 0 {
		t.Fatal("the idle device asked for no kick")
	}
	if wait, err := fe.c.receiveOnce(tx, r); wait || err != nil {
		t.Fatalf("busy ring: wait %v, %v", wait, err)
	}
	if k := kicks(txQueue, 10, func(i int) bool { return fe.transmit(uint16(10+i), frame(60, 1), true) }); k != 0 {
		t.Fatalf("%d kicks while the device was busy with the transmit ring", k)
	}

	// Receive: out of buffers, kicks are asked for; once the device has
	// buffers again, posting more does not kick.
	if n, err := fe.c.TrySendBatch([][]byte{frame(60, 1)}); n != 0 || !errors.Is(err, conn.ErrWouldBlock) {
		t.Fatalf("no buffers: %d, %v", n, err)
	}
	post := func(first int) func(i int) bool {
		return func(i int) bool {
			buf := fe.alloc(2048)
			fe.setDesc(fe.ringBase(rxQueue)+descOff, first+i, guestBase+buf, 2048, descWrite, 0)
			return fe.offer(rxQueue, uint16(first+i), true)
		}
	}
	if k := kicks(rxQueue, 10, post(0)); k == 0 {
		t.Fatal("the device waiting for buffers asked for no kick")
	}
	if n, err := fe.c.TrySendBatch([][]byte{frame(60, 1), frame(60, 2)}); n != 2 || err != nil {
		t.Fatalf("send: %d, %v", n, err)
	}
	if k := kicks(rxQueue, 10, post(10)); k != 0 {
		t.Fatalf("%d kicks for buffers posted while the device had some", k)
	}
}
