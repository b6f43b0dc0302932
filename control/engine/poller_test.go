package engine

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"multifs/multilink/conn"
)

// A reader is woken by a frame whichever way it waits: in poll(2) right
// after traffic, parked in the shared epoll once idle for longer than
// hotIdle, or parked because maxHot threads already wait; and Close ends
// a wait of either kind.
func TestReaderWakesFromEveryWait(t *testing.T) {
	e := newEngine(t)
	// More pairs than hot threads: some of the readers must park.
	const pairs = maxHot + 4
	var srcs, dsts []*FD
	var waits []<-chan recvResult
	start := time.Now()
	for i := 0; i < pairs; i++ {
		a, b := socketPair(t, e)
		srcs, dsts = append(srcs, a), append(dsts, b)
		waits = append(waits, recvAsync(t, b))
	}
	var hot, parked int
	waitFor(t, "every reader waiting, in poll(2) or parked", func() bool {
		hot, parked = 0, 0
		for _, d := range dsts {
			switch d.waitNow() {
			case waitingHot:
				hot++
			case waitingParked:
				parked++
			}
		}
		return hot+parked == pairs
	})
	// Within hotIdle no reader in poll(2) has given up its thread yet.
	if hot > maxHot || hot < maxHot && time.Since(start) < hotIdle {
		t.Fatalf("%d readers in poll(2), %d parked; want %d and %d", hot, parked, maxHot, pairs-maxHot)
	}
	for i := range srcs {
		sendRaw(t, srcs[i], 1)
	}
	for i, w := range waits {
		if r := waitRecv(t, "hot or parked", w); r.err != nil || r.n != 1 {
			t.Fatalf("reader %d: got %d frames, %v; want 1", i, r.n, r.err)
		}
	}

	// Idle for longer than hotIdle: the reader has parked.
	w := recvAsync(t, dsts[0])
	parks(t, dsts[0], "idle for hotIdle")
	sendRaw(t, srcs[0], 1)
	if r := waitRecv(t, "parked after hotIdle", w); r.err != nil || r.n != 1 {
		t.Fatalf("after hotIdle: got %d frames, %v; want 1", r.n, r.err)
	}

	// Close ends a parked wait and one in poll(2), at once.
	inPark := recvAsync(t, dsts[2])
	parks(t, dsts[2], "idle for hotIdle")
	inPoll := recvInPoll(t, srcs[1], dsts[1])
	for _, c := range []struct {
		what string
		p    *FD
		ch   <-chan recvResult
	}{{"in poll(2)", dsts[1], inPoll}, {"parked", dsts[2], inPark}} {
		start := time.Now()
		c.p.Close()
		if r := waitRecv(t, c.what, c.ch); r.err == nil {
			t.Fatalf("%s: recvBatch on a closed socket returned %d frames and no error", c.what, r.n)
		}
		if d := time.Since(start); d > hotIdle/2 {
			t.Fatalf("%s: Close took %v to end the wait", c.what, d)
		}
	}
	if e.hotWaiters.Load() != 0 {
		t.Fatalf("%d threads still counted as waiting in poll(2)", e.hotWaiters.Load())
	}
}

// Receive delivers every frame whether the hot loop serves the socket
// (busy) or its goroutine parks it (idle for longer than hotIdle), and
// Close ends it in either state, leaving nothing in the loop.
func TestReceiveThroughLoopAndPark(t *testing.T) {
	e := newEngine(t)
	for _, closeWhen := range []string{"in the loop", "parked"} {
		src, dst := socketPair(t, e)
		got := make(chan int, 1000)
		r := fixedReceiver(t, conn.BatchSize, func(n int) { got <- n })
		ended := make(chan error, 1)
		go func() { ended <- dst.Receive(r) }()
		total := 0
		want := 0
		round := func(round int) {
			sendRaw(t, src, 5)
			want += 5
			deadline := time.After(2 * time.Second)
			for total < want {
				select {
				case n := <-got:
					total += n
				case <-deadline:
					t.Fatalf("round %d: %d of %d frames delivered after 2 s", round, total, want)
				}
			}
		}
		for r := 0; r < 3; r++ {
			round(r)
			if r < 2 {
				parks(t, dst, fmt.Sprintf("round %d", r)) // idle: back to parking
			}
		}
		if closeWhen == "parked" {
			parks(t, dst, "before the close")
		}
		// Frames just came: the loop serves dst, for hotIdle. A test held
		// up longer than that finds it parked, and sends more.
		for r := 3; closeWhen == "in the loop"; r++ {
			var parked bool
			waitFor(t, "the socket in the loop or parked", func() bool {
				parked = dst.waitNow() == waitingParked
				return parked || dst.inLoop()
			})
			if !parked {
				break
			}
			if r == 8 {
				t.Fatal("the socket never seen in the hot loop in 5 rounds")
			}
			round(r)
		}
		start := time.Now()
		dst.Close()
		select {
		case err := <-ended:
			if err == nil {
				t.Fatalf("closed %s: Receive returned no error", closeWhen)
			}
		case <-time.After(time.Second):
			t.Fatalf("closed %s: Receive still running 1 s after Close", closeWhen)
		}
		if d := time.Since(start); d > hotIdle {
			t.Fatalf("closed %s: Receive took %v to end", closeWhen, d)
		}
		if r.out.Load() {
			t.Fatalf("closed %s: Receive returned holding the receiver's batch", closeWhen)
		}
		if left := e.loopMembers(); left != 0 {
			t.Fatalf("closed %s: %d members left in the hot loop", closeWhen, left)
		}
	}
}

// A host's socket (Options.OwnThread) is served on its own thread, never by the
// hot loop: the loop may wait for the host, which may wait for us.
func TestOwnThreadStaysOutOfTheLoop(t *testing.T) {
	e := newEngine(t)
	src, dst := socketPairOpts(t, e, Options{OwnThread: true})
	var got atomic.Int64
	r := fixedReceiver(t, conn.BatchSize, func(n int) { got.Add(int64(n)) })
	ended := make(chan error, 1)
	go func() { ended <- dst.Receive(r) }()
	inPoll := 0
	for i := 0; i < 20; i++ {
		sendRaw(t, src, 5)
		time.Sleep(5 * time.Millisecond) // a pace: a burst every 5 ms, each well within hotIdle of the last
		if e.loopMembers() != 0 {
			t.Fatalf("a receiver that keeps its own thread joined the hot loop")
		}
		if dst.waitNow() == waitingHot {
			inPoll++
		}
	}
	if inPoll == 0 {
		t.Fatal("the receiver was never seen waiting in poll(2) on its own thread")
	}
	deadline := time.Now().Add(2 * time.Second)
	for got.Load() < 100 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got.Load() != 100 {
		t.Fatalf("delivered %d frames of 100", got.Load())
	}
	dst.Close()
	select {
	case <-ended:
	case <-time.After(time.Second):
		t.Fatal("Receive still running 1 s after Close")
	}
}

// While the hot loop has members it waits in epoll_wait keeping its P
// (epollWaitKeepingP). The garbage collector must still be able to stop
// the world at once: its preemption signal interrupts the wait. Were the
// wait not interrupted, each collection would wait for it to time out
// (up to hotIdle/5 = 10 ms).
func TestLoopWaitLetsGCStop(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	frame := loopMember(t)
	var took []time.Duration
	for i := 0; i < 21; i++ {
		frame() // then the loop waits again; the collection lands in that wait
		time.Sleep(time.Duration(i%7) * time.Millisecond)
		start := time.Now()
		runtime.GC()
		took = append(took, time.Since(start))
	}
	// Under the race detector and a loaded CPU a collection takes 1-9 ms;
	// with the wait not interruptible (SIGURG blocked in it), 17-47.
	medianAtMost(t, took, 15*time.Millisecond, "a garbage collection with the loop waiting")
}

// With a single P (GOMAXPROCS 1) the loop must not keep it while it
// waits: no other goroutine of the daemon could run until the wait ended
// (up to hotIdle/5 = 10 ms). Here the goroutine that waits for a frame's
// delivery is the one kept waiting.
func TestLoopWaitLeavesTheOnlyP(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	frame := loopMember(t)
	time.Sleep(2 * hotIdle / 5) // a sweep sees GOMAXPROCS 1
	var took []time.Duration
	for i := 0; i < 21; i++ {
		took = append(took, frame())
	}
	// Well under a millisecond here; 20 ms when the loop keeps the P.
	medianAtMost(t, took, 10*time.Millisecond, "a frame's delivery")
}

// Engine.Close closes the descriptors still open, which ends their waits,
// whichever they are in (parked, in the hot loop), stops the engine's two
// goroutines, and makes later descriptors fail.
func TestEngineCloseEndsEverything(t *testing.T) {
	e, err := New()
	if err != nil {
		t.Fatal(err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	src, err := e.NewSocket(fds[0], "src", Options{})
	if err != nil {
		t.Fatal(err)
	}
	busy, err := e.NewSocket(fds[1], "busy", Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, idle := socketPair(t, e)
	ended := make(chan error, 2)
	got := make(chan int, 100)
	for _, p := range []*FD{busy, idle} {
		r := fixedReceiver(t, 1, func(n int) { got <- n })
		go func() { ended <- p.Receive(r) }()
	}
	for i := 0; i < 2; i++ { // the first wakes the parked reader, the second comes through the loop
		sendRaw(t, src, 1)
		select {
		case <-got:
		case <-time.After(2 * time.Second):
			t.Fatal("no frame delivered after 2 s")
		}
	}
	waitFor(t, "one socket in the loop, the other parked", func() bool {
		return busy.inLoop() && idle.waitNow() == waitingParked
	})
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i := 0; i < 2; i++ {
		select {
		case err := <-ended:
			if err == nil {
				t.Fatal("Receive returned no error after the engine closed")
			}
		case <-time.After(time.Second):
			t.Fatal("Receive still running 1 s after the engine closed")
		}
	}
	for _, p := range []*FD{src, busy, a, idle} {
		if p.Close() == nil {
			t.Fatal("a descriptor of a closed engine was still open")
		}
	}
	select {
	case <-e.poller.done:
	default:
		t.Fatal("the poller's watcher still runs after Close")
	}
	select {
	case <-e.loop.done:
	default:
		t.Fatal("the hot loop still runs after Close")
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.NewSocket(fd, "late", Options{}); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("NewSocket after Close: %v, want os.ErrClosed", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Fatalf("NewSocket after Close left its descriptor open (fcntl: %v)", err)
	}
	if e.Close() == nil {
		t.Fatal("a second Close returned nil")
	}
}
