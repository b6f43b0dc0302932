package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// A hostile guest's transmit chains: each is dropped (delivered with
// size 0, which the multilink counts in rx_dropped), counted as a fault,
// and given back; the next good frame goes through.
func TestBadTransmitChains(t *testing.T) {
	cases := []struct {
		name  string
		setup func(fe *frontend, head uint16)
	}{
		{"loop", func(fe *frontend, head uint16) {
			b := fe.alloc(64)
			fe.setDesc(fe.ringBase(txQueue), int(head), guestBase+b, 64, descNext, head)
		}},
		{"next out of range", func(fe *frontend, head uint16) {
			b := fe.alloc(64)
			fe.setDesc(fe.ringBase(txQueue), int(head), guestBase+b, 64, descNext, qnum+5)
		}},
		{"outside memory", func(fe *frontend, head uint16) {
			fe.setDesc(fe.ringBase(txQueue), int(head), 0x1000, 64, 0, 0)
		}},
		{"past the end of memory", func(fe *frontend, head uint16) {
			fe.setDesc(fe.ringBase(txQueue), int(head), guestBase+memSize-32, 64, 0, 0)
		}},
		{"length overflows", func(fe *frontend, head uint16) {
			fe.setDesc(fe.ringBase(txQueue), int(head), ^uint64(0)-10, 100, 0, 0)
		}},
		{"indirect loop", func(fe *frontend, head uint16) {
			tbl, b := fe.alloc(32), fe.alloc(64)
			fe.setDesc(tbl, 0, guestBase+b, 12, descNext, 1)
			fe.setDesc(tbl, 1, guestBase+b, 52, descNext, 0)
			fe.setDesc(fe.ringBase(txQueue), int(head), guestBase+tbl, 32, descIndirect, 0)
		}},
		{"nested indirect", func(fe *frontend, head uint16) {
			tbl := fe.alloc(16)
			fe.setDesc(tbl, 0, guestBase+tbl, 16, descIndirect, 0)
			fe.setDesc(fe.ringBase(txQueue), int(head), guestBase+tbl, 16, descIndirect, 0)
		}},
		{"indirect table outside memory", func(fe *frontend, head uint16) {
			fe.setDesc(fe.ringBase(txQueue), int(head), guestBase+memSize-16, 64, descIndirect, 0)
		}},
		{"indirect length not whole", func(fe *frontend, head uint16) {
			tbl := fe.alloc(32)
			fe.setDesc(fe.ringBase(txQueue), int(head), guestBase+tbl, 20, descIndirect, 0)
		}},
		{"indirect with next", func(fe *frontend, head uint16) {
			tbl := fe.alloc(16)
			fe.setDesc(fe.ringBase(txQueue), int(head), guestBase+tbl, 16, descIndirect|descNext, 1)
		}},
		{"indirect table longer than the ring", func(fe *frontend, head uint16) {
			// 300 entries on a ring of 256: a chain longer than the
			// ring, however honest each entry looks.
			const n = qnum + 44
			tbl, b := fe.alloc(16*n), fe.alloc(20)
			for i := 0; i < n-1; i++ {
				fe.setDesc(tbl, i, guestBase+b, 20, descNext, uint16(i+1))
			}
			fe.setDesc(tbl, n-1, guestBase+b, 20, 0, 0)
			fe.setDesc(fe.ringBase(txQueue), int(head), guestBase+tbl, 16*n, descIndirect, 0)
		}},
		{"shorter than the header", func(fe *frontend, head uint16) {
			b := fe.alloc(8)
			fe.setDesc(fe.ringBase(txQueue), int(head), guestBase+b, 8, 0, 0)
		}},
		{"head out of range", func(fe *frontend, head uint16) {}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fe := newFrontend(t)
			fe.start(stdFeatures)
			r := fe.receive()
			head := uint16(3)
			if tc.name == "head out of range" {
				head = qnum + 1
			} else {
				tc.setup(fe, head)
			}
			fe.offer(txQueue, head, true)
			fe.transmit(4, frame(60, 1), true)
			got, sizes := r.waitFrames(t, 2)
			if sizes[0] != 0 {
				t.Fatalf("bad chain delivered with size %d", sizes[0])
			}
			if sizes[1] != 60 || string(got[1]) != string(frame(60, 1)) {
				t.Fatalf("the good frame after it: size %d", sizes[1])
			}
			if f := fe.c.Faults(); f != 1 {
				t.Fatalf("%d faults counted, want 1", f)
			}
			waitFor(t, "both given back", func() bool { return fe.usedIdx(txQueue) == 2 })
		})
	}
}

// A bad receive chain drops the frame being sent (an error: the multilink
// counts it and the rest of the batch in tx_dropped), counted as a fault.
func TestBadReceiveChain(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures)
	fe.setDesc(fe.ringBase(rxQueue), 0, guestBase+memSize-100, 4096, descWrite, 0)
	fe.offer(rxQueue, 0, true)
	fe.postRX(1, 2, 2048)
	n, err := fe.c.TrySendBatch([][]byte{frame(1000, 1), frame(60, 2)})
	if n != 0 || !errors.Is(err, ErrFrameDropped) {
		t.Fatalf("sent %d, %v", n, err)
	}
	wantBadRXChainReturned(t, fe)
	if n, err := fe.c.TrySendBatch([][]byte{frame(60, 2)}); n != 1 || err != nil {
		t.Fatalf("next send: %d, %v", n, err)
	}
}

// wantBadRXChainReturned: the receive chain at descriptor 0 was refused
// as one fault and given back to the guest unwritten (used entry 0,
// length 0), so the guest can reuse it.
func wantBadRXChainReturned(t *testing.T, fe *frontend) {
	t.Helper()
	if fe.c.Faults() != 1 {
		t.Fatalf("%d faults", fe.c.Faults())
	}
	if id, ln := fe.used(rxQueue, 0); fe.usedIdx(rxQueue) != 1 || id != 0 || ln != 0 {
		t.Fatalf("bad chain not given back empty: used %d, entry %d/%d", fe.usedIdx(rxQueue), id, ln)
	}
}

// A receive chain that comes back to itself is a loop even when the frame
// would fit before the loop closes: dropped and counted, not written over
// itself and delivered.
func TestReceiveLoopDropped(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures)
	b := fe.alloc(64)
	fe.setDesc(fe.ringBase(rxQueue), 0, guestBase+b, 64, descWrite|descNext, 0)
	fe.offer(rxQueue, 0, true)
	n, err := fe.c.TrySendBatch([][]byte{frame(100, 1)})
	if n != 0 || !errors.Is(err, ErrFrameDropped) {
		t.Fatalf("a frame written into a looping chain: sent %d, %v", n, err)
	}
	wantBadRXChainReturned(t, fe)
}

// A frontend that keeps sending bad chains is disconnected.
func TestRepeatOffenderDisconnected(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures)
	r := fe.receive()
	for i := 0; i < MaxFaults+1; i++ {
		fe.setDesc(fe.ringBase(txQueue), i%qnum, 0x10, 64, 0, 0)
		fe.offer(txQueue, uint16(i%qnum), true)
		if i%32 == 31 {
			r.waitFrames(t, i+1)
		}
	}
	select {
	case err := <-fe.served:
		t.Logf("Serve ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatalf("still connected after %d faults", fe.c.Faults())
	}
	if !fe.c.PeerGone() {
		t.Fatal("PeerGone false after the disconnection")
	}
	fe.served <- nil // for the cleanup
}

// An available index that moves by more than the ring's size cannot be:
// the ring stops and the frontend is disconnected at once.
func TestAvailIndexJump(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures)
	fe.receive()
	fe.put16(fe.ringBase(txQueue)+availOff+2, qnum+1)
	fe.doKick(txQueue)
	select {
	case <-fe.served:
	case <-time.After(5 * time.Second):
		t.Fatal("still connected")
	}
	fe.served <- nil
}

// Requests that set up something impossible are refused (REPLY_ACK
// non-zero), counted, and leave the connection working.
func TestBadSetupRefused(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures)
	devNull, _ := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	defer unix.Close(devNull)
	pipe := make([]int, 2)
	unix.Pipe2(pipe, unix.O_CLOEXEC)
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])
	sock, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	defer unix.Close(sock)
	disk, err := os.CreateTemp(".", "region")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(disk.Name())
	defer disk.Close()
	disk.Truncate(memSize)
	big := memTablePayload([4]uint64{guestBase, memSize * 2, fe.uva(0), 0})
	one := [4]uint64{guestBase, memSize, fe.uva(0), 0}
	nine := make([][4]uint64, 9)
	for i := range nine {
		nine[i] = [4]uint64{guestBase + uint64(i)*memSize, memSize, fe.uva(0) + uint64(i)*memSize, 0}
	}
	b := fe.ringBase(txQueue)
	cases := []struct {
		name    string
		req     uint32
		payload []byte
		fds     []int
	}{
		{"region larger than its file", reqSetMemTable, big, []int{fe.memfd}},
		{"nine regions", reqSetMemTable, memTablePayload(nine...), nil},
		{"region from /dev/null", reqSetMemTable, memTablePayload(one), []int{devNull}},
		{"region from a socket", reqSetMemTable, memTablePayload(one), []int{sock}},
		{"region from a disk file", reqSetMemTable, memTablePayload(one), []int{int(disk.Fd())}},
		{"region without its descriptor", reqSetMemTable, memTablePayload(one), nil},
		{"overlapping regions", reqSetMemTable, memTablePayload(one, one), []int{fe.memfd, fe.memfd}},
		{"region misaligned", reqSetMemTable, memTablePayload([4]uint64{guestBase, 4096, fe.uva(0) + 3, 3}), []int{fe.memfd}},
		{"empty region", reqSetMemTable, memTablePayload([4]uint64{guestBase, 0, fe.uva(0), 0}), []int{fe.memfd}},
		{"truncated table", reqSetMemTable, memTablePayload(one)[:20], []int{fe.memfd}},
		{"ring outside memory", reqSetVringAddr, fe.addrPayload(txQueue, fe.uva(0)+memSize, fe.uva(b+availOff), fe.uva(b+usedOff)), nil},
		{"ring crossing the end", reqSetVringAddr, fe.addrPayload(txQueue, fe.uva(memSize-2048), fe.uva(b+availOff), fe.uva(b+usedOff)), nil},
		{"descriptor table misaligned", reqSetVringAddr, fe.addrPayload(txQueue, fe.uva(b+8), fe.uva(b+availOff), fe.uva(b+usedOff)), nil},
		{"used ring misaligned", reqSetVringAddr, fe.addrPayload(txQueue, fe.uva(b), fe.uva(b+availOff), fe.uva(b+usedOff+2)), nil},
		{"dirty logging", reqSetVringAddr, append(state(txQueue, 1), fe.addrPayload(txQueue, 0, 0, 0)[8:]...), nil},
		{"queue 2", reqSetVringNum, state(2, 256), nil},
		{"ring size 100", reqSetVringNum, state(rxQueue, 100), nil},
		{"ring size 65536", reqSetVringNum, state(rxQueue, 65536), nil},
		{"kick is a pipe", reqSetVringKick, u64(rxQueue), []int{pipe[0]}},
		{"call is /dev/null", reqSetVringCall, u64(rxQueue), []int{devNull}},
		{"kick without descriptor", reqSetVringKick, u64(rxQueue), nil},
		{"kick polling", reqSetVringKick, u64(rxQueue | vringFdInvalid), nil},
		{"two descriptors", reqSetVringCall, u64(rxQueue), []int{fe.call[0], fe.call[1]}},
		{"descriptor on SET_OWNER", reqSetOwner, nil, []int{fe.call[0]}},
		{"features not offered", reqSetFeatures, u64(stdFeatures | 1<<26), nil},
		{"protocol features not offered", reqSetProtocolFeatures, u64(1 << 1), nil},
		{"short payload", reqSetFeatures, []byte{1, 2}, nil},
		{"log base", reqSetLogBase, u64(0), []int{fe.memfd}},
		{"unknown request", 999, nil, nil},
	}
	// What multifs does not support is refused, logged, and not held
	// against the frontend; the rest are faults.
	unsupported := map[string]bool{"dirty logging": true, "kick polling": true, "log base": true, "unknown request": true}
	fdsBefore := openFDs(t)
	faults := int64(0)
	for _, tc := range cases {
		fe.logs.Reset()
		if st := fe.ack(tc.req, tc.payload, tc.fds...); st == 0 {
			t.Errorf("%s: accepted", tc.name)
		}
		msg := MsgBadRequest
		if unsupported[tc.name] {
			msg = MsgUnsupported
		} else {
			faults++
		}
		if f := fe.c.Faults(); f != faults {
			t.Errorf("%s: %d faults counted, want %d", tc.name, f, faults)
		}
		var lines []string
		for _, e := range fe.logs.AllEntries() {
			if e.Level <= logrus.InfoLevel {
				lines = append(lines, e.Message)
			}
		}
		if len(lines) != 1 || lines[0] != msg {
			t.Errorf("%s: logged %q, want one %q", tc.name, lines, msg)
		}
	}
	// Every descriptor sent with them was closed.
	if after := openFDs(t); after != fdsBefore {
		t.Errorf("%d descriptors open after, %d before", after, fdsBefore)
	}
	// A request that has a reply of its own gets an error one.
	fe.send(reqGetConfig, make([]byte, 12))
	if p := fe.reply(reqGetConfig); len(p) != 8 || binary.NativeEndian.Uint64(p) == 0 {
		t.Fatalf("GET_CONFIG reply % x", p)
	}
	// Still working.
	fe.postRX(0, 1, 2048)
	if n, err := fe.c.TrySendBatch([][]byte{frame(60, 1)}); n != 1 || err != nil {
		t.Fatalf("after the refusals: %d, %v", n, err)
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Requests whose header cannot be trusted end the connection, closing
// the descriptors that came with them.
func TestBadHeaders(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags uint32
		size  int
		fds   int
	}{
		{"version 2", 2, 0, 0},
		{"reply bit", flagVersion | flagReply, 0, 0},
		{"payload too big", flagVersion, MaxPayload + 1, 0},
		{"nine descriptors", flagVersion, 8, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fe := newFrontend(t)
			before := openFDs(t)
			var fds []int
			for i := 0; i < tc.fds; i++ {
				fd, _ := unix.Eventfd(0, unix.EFD_CLOEXEC)
				fds = append(fds, fd)
			}
			b := make([]byte, HeaderLen+tc.size)
			binary.NativeEndian.PutUint32(b, reqSetVringCall)
			binary.NativeEndian.PutUint32(b[4:], tc.flags)
			binary.NativeEndian.PutUint32(b[8:], uint32(tc.size))
			var oob []byte
			if len(fds) > 0 {
				oob = unix.UnixRights(fds...)
			}
			unix.Sendmsg(fe.sock, b, oob, nil, 0)
			for _, fd := range fds {
				unix.Close(fd)
			}
			select {
			case err := <-fe.served:
				t.Logf("Serve: %v", err)
			case <-time.After(5 * time.Second):
				t.Fatal("connection still served")
			}
			fe.served <- nil
			if after := openFDs(t); after != before {
				t.Fatalf("%d descriptors open, %d before", after, before)
			}
		})
	}
}

// A frontend that shrinks its memory file under the mapping makes the
// next access fault: the daemon survives, the ring stops and the
// frontend is disconnected.
func TestShrunkMemory(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures)
	r := fe.receive()
	fe.transmit(0, frame(60, 1), true)
	r.waitFrames(t, 1)
	if err := unix.Ftruncate(fe.memfd, 0); err != nil {
		t.Fatal(err)
	}
	fe.doKick(txQueue)
	select {
	case <-fe.served:
	case <-time.After(5 * time.Second):
		t.Fatal("still connected")
	}
	fe.served <- nil
	if n, err := fe.c.TrySendBatch([][]byte{frame(60, 1)}); n != 0 || err == nil {
		t.Fatalf("send after the fault: %d, %v", n, err)
	}
}

// A frontend can make the descriptors it shares blocking, and its call
// eventfd full: a write to it would then block until someone reads it.
// Neither the data path nor Close may wait for that.
func TestBlockingDescriptors(t *testing.T) {
	fe := newFrontend(t)
	// Blocking kick and call eventfds, the call one full.
	for q := 0; q < 2; q++ {
		unix.Close(fe.kick[q])
		unix.Close(fe.call[q])
		fe.kick[q], _ = unix.Eventfd(0, unix.EFD_CLOEXEC)
		fe.call[q], _ = unix.Eventfd(0, unix.EFD_CLOEXEC)
		var full [8]byte
		binary.NativeEndian.PutUint64(full[:], ^uint64(0)-1)
		if _, err := unix.Write(fe.call[q], full[:]); err != nil {
			t.Fatal(err)
		}
	}
	fe.start(stdFeatures)
	r := fe.receive()
	fe.postRX(0, 64, 2048)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 8; i++ {
			if n, err := fe.c.TrySendBatch([][]byte{frame(60, byte(i)), frame(70, byte(i))}); n != 2 || err != nil {
				t.Errorf("send %d: %d, %v", i, n, err)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("sends blocked on a full call eventfd")
	}
	for i := 0; i < 4; i++ {
		fe.transmit(uint16(i), frame(60, byte(i)), true)
	}
	r.waitFrames(t, 4)
	time.Sleep(50 * time.Millisecond) // the notifier has had its go
	if n := blockedSignals.Load(); n != 0 {
		t.Fatalf("%d signals blocked", n)
	}
	closed := make(chan struct{})
	go func() { fe.c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked")
	}
}

// startUntilCallStuck starts fe and passes one frame from its guest; the
// call that tells the guest so is the write the test's signalWrite holds,
// and this returns once that write has begun (stuck).
func startUntilCallStuck(t *testing.T, fe *frontend, stuck <-chan struct{}) {
	t.Helper()
	fe.start(stdFeatures)
	r := fe.receive()
	fe.transmit(0, frame(60, 1), true)
	r.waitFrames(t, 1)
	select {
	case <-stuck:
	case <-time.After(5 * time.Second):
		t.Fatal("no call signalled")
	}
}

// A frontend can fill its call eventfd between the notifier's poll and
// its write, which then blocks until someone reads the eventfd. While it
// is stuck, the call descriptors the frontend keeps replacing must not
// pile up in the daemon: each is closed at once, but the one being
// written to.
func TestStuckNotifierHoldsNoReplacedCalls(t *testing.T) {
	release := make(chan struct{})
	stuck := make(chan struct{}, 1)
	signalWrite = func(int) {
		select {
		case stuck <- struct{}{}:
		default:
		}
		<-release
	}
	fe := newFrontend(t) // its notifier holds the stuck write
	signalWrite = realSignalWrite
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	startUntilCallStuck(t, fe, stuck)
	const swaps = 50
	before := openFDs(t)
	for i := 0; i < swaps; i++ {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			t.Fatal(err)
		}
		st := fe.ack(reqSetVringCall, u64(uint64(i%numQueues)), fd)
		unix.Close(fd)
		if st != 0 {
			t.Fatalf("SET_VRING_CALL %d refused", i)
		}
	}
	held := openFDs(t) - before
	t.Logf("%d call swaps with the notifier stuck: %d more descriptors open", swaps, held)
	if held > numQueues {
		t.Errorf("%d replaced call descriptors still open while the notifier is stuck, want at most %d", held, numQueues)
	}
	close(release)
	released = true
	waitFor(t, "the stuck write's descriptor closed", func() bool { return openFDs(t)-before <= 0 })
}

// The same on the way to the guest, and before the rings start: a send
// into a shrunk memory fails and disconnects, a ring set up on it is
// refused; the daemon survives both.
func TestShrunkMemoryReceiveAndSetup(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures)
	fe.postRX(0, 4, 2048)
	if n, err := fe.c.TrySendBatch([][]byte{frame(60, 1)}); n != 1 || err != nil {
		t.Fatalf("send before: %d, %v", n, err)
	}
	if err := unix.Ftruncate(fe.memfd, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := fe.c.TrySendBatch([][]byte{frame(60, 2)}); n != 0 || !errors.Is(err, ErrFrameDropped) {
		t.Fatalf("send into shrunk memory: %d, %v", n, err)
	}
	select {
	case <-fe.served:
	case <-time.After(5 * time.Second):
		t.Fatal("still connected")
	}
	fe.served <- nil

	// A ring placed in memory already shrunk.
	fe = newFrontend(t)
	fe.send(reqSetFeatures, u64(stdFeatures))
	fe.send(reqSetProtocolFeatures, u64(protoReplyAck))
	if err := unix.Ftruncate(fe.memfd, memSize/2); err != nil {
		t.Fatal(err)
	}
	if st := fe.ack(reqSetMemTable, memTablePayload([4]uint64{guestBase, memSize / 2, fe.uva(0), 0}), fe.memfd); st != 0 {
		t.Fatal("SET_MEM_TABLE refused")
	}
	if err := unix.Ftruncate(fe.memfd, 0); err != nil {
		t.Fatal(err)
	}
	fe.send(reqSetVringNum, state(txQueue, qnum))
	b := fe.ringBase(txQueue)
	if st := fe.ack(reqSetVringAddr, fe.addrPayload(txQueue, fe.uva(b+descOff), fe.uva(b+availOff), fe.uva(b+usedOff))); st != 0 {
		t.Fatal("SET_VRING_ADDR refused before the kick")
	}
	if st := fe.ack(reqSetVringKick, u64(txQueue), fe.kick[txQueue]); st == 0 {
		t.Fatal("a ring in shrunk memory was started")
	}
	if f := fe.c.Faults(); f != 1 {
		t.Fatalf("%d faults, want 1", f)
	}
}

// spinGuestEnv names, in the environment of this test binary run again
// as a guest process, where the transmit ring is in the memory file it
// inherits as descriptor 3: "avail used num", offsets and size.
const spinGuestEnv = "VHOSTUSER_SPIN_GUEST"

func TestMain(m *testing.M) {
	if v := os.Getenv(spinGuestEnv); v != "" {
		spinGuest(v)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// spinGuest is a guest, in a process of its own as a real one is, that
// makes transmit entries available as fast as the device takes them,
// always a ring's worth ahead (never more, which would be an impossible
// index): it sees entries taken when the device writes their used
// entries over the guest's markers, and kicks (descriptor 4) when the device asks
// (avail_event). It stops after 5 s, or when killed.
func spinGuest(ring string) {
	const marker = 0xffffffff
	var avail, used, num uint64
	if _, err := fmt.Sscan(ring, &avail, &used, &num); err != nil {
		os.Exit(2)
	}
	mem, err := unix.Mmap(3, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		os.Exit(2)
	}
	le := binary.LittleEndian
	// The guest watches one used entry in every stride (the last of
	// the next stride): cheap enough to stay ahead of the device.
	const stride = 1024
	consumed := le.Uint16(mem[used+2:])
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; ; i++ {
		if i%(1<<10) == 0 && time.Now().After(deadline) {
			return
		}
		probe := used + 4 + 8*((uint64(consumed)+stride-1)%num)
		if le.Uint32(mem[probe:]) != marker {
			le.PutUint32(mem[probe:], marker)
			consumed += stride
		}
		// The device has taken at least consumed entries: a ring less
		// one ahead of that is never more than a ring ahead of it.
		old := le.Uint16(mem[avail+2:])
		idx := consumed + uint16(num) - 1
		le.PutUint16(mem[avail+2:], idx)
		if ev := le.Uint16(mem[used+4+8*num:]); idx-ev-1 < idx-old {
			unix.Write(4, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		}
	}
}

// A transmit ring started but disabled has its entries given back
// unread. A guest that keeps adding entries as fast as they go must not
// hold the queue (and every request that needs it) for good: the device
// gives back at most a ring's worth at a time.
func TestDisabledRingSpinDoesNotHoldQueue(t *testing.T) {
	fe := newFrontend(t)
	fe.start(stdFeatures)
	fe.receive()
	// The transmit ring again, as large as can be, past the others.
	const num = maxQueueSize
	const desc, avail, used = 1 << 20, 1<<20 + 16*num, 2 << 20
	fe.send(reqGetVringBase, state(txQueue, 0))
	fe.reply(reqGetVringBase)
	fe.send(reqSetVringNum, state(txQueue, num))
	fe.send(reqSetVringBase, state(txQueue, 0))
	if st := fe.ack(reqSetVringAddr, fe.addrPayload(txQueue, fe.uva(desc), fe.uva(avail), fe.uva(used))); st != 0 {
		t.Fatal("SET_VRING_ADDR refused")
	}
	if st := fe.ack(reqSetVringEnable, state(txQueue, 0)); st != 0 {
		t.Fatal("SET_VRING_ENABLE 0 refused")
	}
	buf := fe.alloc(64)
	fe.setDesc(desc, 0, guestBase+buf, 64, 0, 0)
	for i := uint64(0); i < num; i++ {
		fe.put16(avail+4+2*i, 0) // every entry is descriptor 0
		fe.put32(used+4+8*i, 0xffffffff)
	}
	fe.send(reqSetVringKick, u64(txQueue), fe.kick[txQueue])

	// Copies for the guest process: an os.File closes its number when
	// collected, which must not be the frontend's (reused by then).
	mem, kick := dupFile(t, fe.memfd, "guest"), dupFile(t, fe.kick[txQueue], "kick")
	defer mem.Close()
	defer kick.Close()
	guest := exec.Command(os.Args[0], "-test.run=^$")
	guest.Env = append(os.Environ(), fmt.Sprintf("%s=%d %d %d", spinGuestEnv, avail, used, num))
	guest.ExtraFiles = []*os.File{mem, kick}
	if err := guest.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		guest.Process.Kill()
		guest.Wait()
	}()
	// The guest's index moves as the device takes entries.
	last, moved := fe.get16(avail+2), 0
	waitFor(t, "the device giving entries back", func() bool {
		idx := fe.get16(avail + 2)
		moved += int(idx - last)
		last = idx
		return moved >= 2*num
	})
	// GET_VRING_BASE needs the queue (the guest gives up after 5 s).
	t0 := time.Now()
	fe.send(reqGetVringBase, state(txQueue, 0))
	fe.reply(reqGetVringBase)
	took := time.Since(t0)
	t.Logf("GET_VRING_BASE answered after %v", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("GET_VRING_BASE waited %v for a queue held by a spinning guest", took.Round(time.Millisecond))
	}
}

// Requests in an order QEMU never uses: a ring's base asked before it
// ever ran, its addresses and kick before any memory table, a queue out
// of range. Each is answered; the ring starts once its memory comes.
func TestRequestsOutOfOrder(t *testing.T) {
	fe := newFrontend(t)
	fe.send(reqSetFeatures, u64(stdFeatures))
	fe.send(reqSetProtocolFeatures, u64(protoReplyAck))
	fe.send(reqGetVringBase, state(rxQueue, 0))
	if p := fe.reply(reqGetVringBase); len(p) != 8 || binary.NativeEndian.Uint32(p[4:]) != 0 {
		t.Fatalf("GET_VRING_BASE of a ring never started: % x", p)
	}
	fe.send(reqGetVringBase, state(numQueues, 0))
	if p := fe.reply(reqGetVringBase); len(p) != 8 || binary.NativeEndian.Uint64(p) != 1 {
		t.Fatalf("GET_VRING_BASE of queue %d: % x, want an error reply", numQueues, p)
	}
	for q := 0; q < numQueues; q++ {
		b := fe.ringBase(q)
		if st := fe.ack(reqSetVringKick, u64(uint64(q)), fe.kick[q]); st != 0 {
			t.Fatal("SET_VRING_KICK before anything refused")
		}
		if st := fe.ack(reqSetVringAddr, fe.addrPayload(q, fe.uva(b+descOff), fe.uva(b+availOff), fe.uva(b+usedOff))); st != 0 {
			t.Fatal("SET_VRING_ADDR before SET_MEM_TABLE refused")
		}
		fe.send(reqSetVringCall, u64(uint64(q)), fe.call[q])
		fe.send(reqSetVringEnable, state(uint32(q), 1))
		if st := fe.ack(reqSetVringNum, state(uint32(q), qnum)); st != 0 {
			t.Fatal("SET_VRING_NUM refused")
		}
	}
	if n, err := fe.c.TrySendBatch([][]byte{frame(60, 1)}); n != 0 || err == nil {
		t.Fatalf("a send with no memory: %d, %v", n, err)
	}
	if st := fe.ack(reqSetMemTable, memTablePayload([4]uint64{guestBase, memSize, fe.uva(0), 0}), fe.memfd); st != 0 {
		t.Fatal("SET_MEM_TABLE refused")
	}
	r := fe.receive()
	fe.transmit(0, frame(60, 2), true)
	r.waitFrames(t, 1)
	fe.postRX(0, 1, 2048)
	if n, err := fe.c.TrySendBatch([][]byte{frame(60, 3)}); n != 1 || err != nil {
		t.Fatalf("a send once the memory came: %d, %v", n, err)
	}
	if f := fe.c.Faults(); f != 1 {
		t.Fatalf("%d faults, want 1 (the queue out of range)", f)
	}
}

// A frontend that sends requests and never reads the replies cannot
// hold the message loop: a reply that cannot be written within the I/O
// timeout ends the connection.
func TestUnreadRepliesEndConnection(t *testing.T) {
	fe := newFrontend(t)
	req := make([]byte, HeaderLen)
	binary.NativeEndian.PutUint32(req, reqGetFeatures)
	binary.NativeEndian.PutUint32(req[4:], flagVersion)
	if err := unix.SetNonblock(fe.sock, true); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	sent := 0
	for deadline := t0.Add(ioTimeout + 5*time.Second); time.Now().Before(deadline); {
		select {
		case err := <-fe.served:
			t.Logf("Serve ended after %v and %d requests: %v", time.Since(t0).Round(time.Millisecond), sent, err)
			fe.served <- nil
			return
		default:
		}
		if _, err := unix.Write(fe.sock, req); err == nil {
			sent++
			continue
		}
		time.Sleep(10 * time.Millisecond) // the backend's buffer is full: it is stuck on a reply
	}
	t.Fatalf("still served %v after %d unread replies", time.Since(t0).Round(time.Millisecond), sent)
}

// A frontend that gets the notifier stuck in a write (its call eventfd
// made blocking and filled between the poll and the write) and then
// exits must not leave the write stuck for good: its goroutine and
// descriptors would stay, and MaxBlockedSignals of them would refuse
// every new frontend. Once the connection is closed the eventfd is
// emptied and the write ends.
func TestStuckSignalFreedAfterClose(t *testing.T) {
	var once atomic.Bool
	stuck := make(chan struct{}, 1)
	signalWrite = func(fd int) {
		if once.Swap(true) {
			realSignalWrite(fd)
			return
		}
		// What the frontend does between the poll and the write.
		var b [8]byte
		unix.Read(fd, b[:]) // still non-blocking: empties it
		unix.SetNonblock(fd, false)
		binary.NativeEndian.PutUint64(b[:], ^uint64(0)-1)
		unix.Write(fd, b[:])
		stuck <- struct{}{}
		realSignalWrite(fd)
	}
	fe := newFrontend(t)
	signalWrite = realSignalWrite
	startUntilCallStuck(t, fe, stuck)
	waitFor(t, "the write under way", func() bool { return blockedSignals.Load() == 1 })
	before := openFDs(t)
	fe.c.Close()
	// The frontend exits: nobody else will ever read its call eventfds.
	for i := range fe.call {
		unix.Close(fe.call[i])
		fe.call[i] = -1
	}
	deadline := time.Now().Add(5 * time.Second)
	for blockedSignals.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := blockedSignals.Load(); n != 0 {
		t.Fatalf("%d signal writes still stuck 5 s after the frontend went", n)
	}
	// Every descriptor of the connection is closed: the socket, each
	// queue's epoll, wake and kick, and the notifier's calls (besides
	// the frontend's own calls, closed above).
	const conn = 1 + 3*numQueues + numQueues
	waitFor(t, "the connection's descriptors closed", func() bool { return before-openFDs(t) == conn+numQueues })
}

// dupFile returns a copy of fd as an *os.File of its own.
func dupFile(t *testing.T, fd int, name string) *os.File {
	t.Helper()
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(d), name)
}
