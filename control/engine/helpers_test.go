package engine

import (
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"multifs/multilink"
	"multifs/multilink/conn"
)

// newEngine returns an engine of the test's own, closed when it ends.
func newEngine(tb testing.TB) *Engine {
	tb.Helper()
	e, err := New()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := e.Close(); err != nil {
			tb.Errorf("closing the engine: %v", err)
		}
	})
	return e
}

// socketPair returns two connected datagram sockets wrapped as the daemon
// wraps its data sockets, in e.
func socketPair(tb testing.TB, e *Engine) (a, b *FD) {
	tb.Helper()
	return socketPairOpts(tb, e, Options{})
}

// socketPairOpts is socketPair with the policy o for b, the receiving end.
func socketPairOpts(tb testing.TB, e *Engine, o Options) (a, b *FD) {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	if a, err = e.NewSocket(fds[0], "a", Options{}); err != nil {
		tb.Fatal(err)
	}
	if b, err = e.NewSocket(fds[1], "b", o); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

type recvResult struct {
	n   int
	err error
}

// fixedReceiver is a conn.Receiver that hands out the same batch of n
// frame buffers every time, as the tests need no pool, and tells deliver
// (if not nil) how many frames each delivery had. It fails the test if the
// engine breaks the ownership rule: a Get while its batch is out, a Put or
// Deliver of a batch that is not.
func fixedReceiver(tb testing.TB, n int, deliver func(n int)) *testReceiver {
	b := &conn.Batch{Bufs: make([][]byte, n), Sizes: make([]int, n), Frames: make([][]byte, 0, n)}
	for i := range b.Bufs {
		b.Bufs[i] = make([]byte, multilink.MaxFrame+1)
	}
	return &testReceiver{tb: tb, b: b, deliver: deliver}
}

type testReceiver struct {
	tb      testing.TB
	b       *conn.Batch
	out     atomic.Bool
	deliver func(n int)
}

func (r *testReceiver) Get() *conn.Batch {
	if r.out.Swap(true) {
		r.tb.Error("Get while the batch is out")
	}
	return r.b
}

func (r *testReceiver) Put(b *conn.Batch) { r.back(b, "Put") }

func (r *testReceiver) Deliver(b *conn.Batch, n int) {
	r.back(b, "Deliver")
	if n < 1 || n > len(b.Bufs) {
		r.tb.Errorf("Deliver of %d frames in a batch of %d", n, len(b.Bufs))
	}
	if r.deliver != nil {
		r.deliver(n)
	}
}

func (r *testReceiver) back(b *conn.Batch, what string) {
	if b != r.b {
		r.tb.Errorf("%s of a batch that is not the receiver's", what)
	}
	if !r.out.Swap(false) {
		r.tb.Errorf("%s of a batch that is not out", what)
	}
}

// recvAsync runs one recvBatch on p in the background.
func recvAsync(t testing.TB, p *FD) <-chan recvResult {
	r := fixedReceiver(t, conn.BatchSize, nil)
	done := make(chan recvResult, 1)
	go func() {
		b, n, err := p.recvBatch(r)
		if err == nil {
			r.Deliver(b, n)
		}
		done <- recvResult{n, err}
	}()
	return done
}

func sendRaw(t *testing.T, p *FD, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := unix.Send(p.fd, make([]byte, 64), unix.MSG_DONTWAIT); err != nil {
			t.Fatal(err)
		}
	}
}

func waitRecv(t *testing.T, what string, ch <-chan recvResult) recvResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(2 * time.Second):
		t.Fatalf("%s: recvBatch still waiting after 2 s", what)
	}
	return recvResult{}
}

// loopMember serves one end of a socket pair with Receive, which puts
// it in the hot loop once frames come, and returns a function that sends
// one frame and returns how long its delivery took. Each call keeps the
// socket a member for another hotIdle. The socket is in an engine of its
// own, whose loop serves nothing else.
func loopMember(t *testing.T) (frame func() time.Duration) {
	e := newEngine(t)
	src, dst := socketPair(t, e)
	got := make(chan int, 100)
	go dst.Receive(fixedReceiver(t, 1, func(n int) { got <- n }))
	frame = func() time.Duration {
		t.Helper()
		start := time.Now()
		sendRaw(t, src, 1)
		select {
		case <-got:
		case <-time.After(2 * time.Second):
			t.Fatal("no frame delivered after 2 s")
		}
		return time.Since(start)
	}
	frame() // wakes the parked reader
	frame() // comes through the loop
	if !dst.inLoop() || e.loopMembers() != 1 {
		t.Fatalf("after two frames: in the hot loop %v, %d members; want true, 1", dst.inLoop(), e.loopMembers())
	}
	return frame
}

// medianAtMost fails the test if the median of took is above limit.
func medianAtMost(t *testing.T, took []time.Duration, limit time.Duration, what string) {
	t.Helper()
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	if med := took[len(took)/2]; med > limit {
		t.Fatalf("%s took %v (median of %d; all: %v)", what, med, len(took), took)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// parks waits until p's reader is parked.
func parks(t *testing.T, p *FD, what string) {
	t.Helper()
	waitFor(t, what+": the reader parking", func() bool { return p.waitNow() == waitingParked })
}

// recvInPoll starts a recvBatch on dst (as recvAsync) and returns once it
// waits in poll(2). A reader waits there for hotIdle only: if the test was
// held up that long and found it parked, a frame from src ends that
// receive and another begins.
func recvInPoll(t *testing.T, src, dst *FD) <-chan recvResult {
	t.Helper()
	for try := 0; try < 5; try++ {
		ch := recvAsync(t, dst)
		var s waitState
		waitFor(t, "a reader waiting", func() bool { s = dst.waitNow(); return s != notWaiting })
		if s == waitingHot {
			return ch
		}
		sendRaw(t, src, 1)
		waitRecv(t, "a reader that parked", ch)
	}
	t.Fatal("a reader never seen in poll(2) in 5 receives")
	return nil
}
