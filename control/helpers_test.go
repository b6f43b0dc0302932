package control

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"multifs/control/wire"
	"multifs/multilink"
	"multifs/perms"
)

// socketPair returns two connected datagram sockets wrapped as the daemon
// wraps its data sockets.
func socketPair(tb testing.TB) (a, b *pollFD) {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	if a, err = newPollFD(fds[0], "a"); err != nil {
		tb.Fatal(err)
	}
	if b, err = newPollFD(fds[1], "b"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// fuzzServer is one server shared by every input of a fuzz run: starting
// one per input would measure setup, not the entry.
var fuzzServer struct {
	once sync.Once
	dir  string
	ml   *multilink.Multilink
	srv  *Server
	err  error
}

func sharedServer(tb testing.TB) (*multilink.Multilink, *Server) {
	fuzzServer.once.Do(func() {
		dir, err := os.MkdirTemp("", "multifs-fuzz")
		if err != nil {
			fuzzServer.err = err
			return
		}
		fuzzServer.dir = dir
		p, _ := perms.Resolve(perms.Spec{}, uint32(os.Geteuid()), uint32(os.Getegid()))
		log := logrus.New()
		log.SetOutput(io.Discard)
		fuzzServer.ml = multilink.New(logrus.NewEntry(log))
		sd, err := OpenSockDir(filepath.Join(dir, "s"), p)
		if err == nil {
			err = sd.Take(p)
		}
		if err != nil {
			fuzzServer.err = err
			return
		}
		fuzzServer.srv = NewServer(sd, p, fuzzServer.ml, logrus.NewEntry(log))
		if fuzzServer.err = fuzzServer.srv.Listen(); fuzzServer.err == nil {
			fuzzServer.srv.Serve()
		}
	})
	if fuzzServer.err != nil {
		tb.Fatal(fuzzServer.err)
	}
	return fuzzServer.ml, fuzzServer.srv
}

type recvResult struct {
	n   int
	err error
}

// fixedBatch returns a get for RecvBatch and ServeBatches that hands out
// the same n frame buffers every time, as the tests need no pool.
func fixedBatch(n int) func() ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, multilink.MaxFrame+1)
	}
	sizes := make([]int, n)
	return func() ([][]byte, []int) { return bufs, sizes }
}

// loopMembers is how many receivers the hot loop serves now.
func loopMembers() int {
	l := theLoop()
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.members)
}

// recvAsync runs one RecvBatch on p in the background.
func recvAsync(p *pollFD) <-chan recvResult {
	get := fixedBatch(multilink.BatchSize)
	done := make(chan recvResult, 1)
	go func() {
		n, err := p.RecvBatch(get, func() {})
		done <- recvResult{n, err}
	}()
	return done
}

func sendRaw(t *testing.T, p *pollFD, n int) {
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
		t.Fatalf("%s: RecvBatch still waiting after 2 s", what)
	}
	return recvResult{}
}

// loopMember serves one end of a socket pair with ServeBatches, which puts
// it in the hot loop once frames come, and returns a function that sends
// one frame and returns how long its delivery took. Each call keeps the
// socket a member for another hotIdle.
func loopMember(t *testing.T) (frame func() time.Duration) {
	src, dst := socketPair(t)
	got := make(chan int, 100)
	go dst.ServeBatches(fixedBatch(1), func() {}, func(n int) { got <- n })
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
	// A member that an earlier test closed may still be on its way out.
	members := -1
	for deadline := time.Now().Add(time.Second); members != 1 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		members = loopMembers()
	}
	if members != 1 {
		t.Fatalf("%d members in the hot loop, want 1", members)
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

// A ptp-like client: joins, and when hung up reconnects at once, as
// libvdeplug_ptp.c does; reports the reconnect's error.
func reconnectAfterEOF(path string) (*Client, <-chan error) {
	c, err := DialSeqpacket(path)
	done := make(chan error, 1)
	if err != nil {
		done <- err
		return nil, done
	}
	go func() {
		if _, err := c.Recv(make([]byte, 100), 5*time.Second); !errors.Is(err, io.EOF) {
			done <- errors.New("no EOF: " + errString(err))
			return
		}
		c.Close()
		c2, err := DialSeqpacket(path)
		if err == nil {
			c2.Close()
		}
		done <- err
	}()
	return c, done
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func startHelper(t *testing.T, path string) (*exec.Cmd, *bufio.Reader, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRefuseHelperProcess$")
	cmd.Env = append(os.Environ(), "MULTIFS_REFUSE_HELPER="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); cmd.Process.Kill(); cmd.Wait() })
	return cmd, bufio.NewReader(out), in
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("helper: %v (read %q)", err, line)
	}
	return strings.TrimSuffix(line, "\n")
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func validRequest() []byte {
	return wire.Request{SockPath: "/tmp/.client-1", Description: "vde_plug user=0 pid=1"}.Encode()
}

func dialSeq(t *testing.T, path string) *Client {
	t.Helper()
	c, err := DialSeqpacket(path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// serve starts a server on a fresh socket directory and returns a dir that
// looks like a multifs mount to the client: DIR/ctl and DIR/host/ctl.
func serve(t *testing.T) (root string, ml *multilink.Multilink, srv *Server) {
	t.Helper()
	base := t.TempDir()
	sockdir := filepath.Join(base, "sock")
	p, err := perms.Resolve(perms.Spec{}, uint32(os.Geteuid()), uint32(os.Getegid()))
	if err != nil {
		t.Fatal(err)
	}
	sd, err := OpenSockDir(sockdir, p)
	if err == nil {
		err = sd.Take(p)
	}
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	ml = multilink.New(logrus.NewEntry(log))
	srv = NewServer(sd, p, ml, logrus.NewEntry(log))
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	srv.Serve()
	root = filepath.Join(base, "mnt")
	os.MkdirAll(filepath.Join(root, "host"), 0o700)
	os.Symlink(srv.LinkCtl(), filepath.Join(root, "ctl"))
	os.Symlink(srv.HostCtl(), filepath.Join(root, "host", "ctl"))
	t.Cleanup(func() {
		srv.Close()
		ml.Close()
		if err := sd.Remove(); err != nil {
			t.Errorf("removing socket dir: %v", err)
		}
	})
	return root, ml, srv
}

func dial(t *testing.T, dir string) *Client {
	t.Helper()
	c, err := Dial(dir, "test pid=1")
	if err != nil {
		t.Fatalf("dial %s: %v", dir, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func recvFrame(t *testing.T, c *Client) []byte {
	t.Helper()
	buf := make([]byte, 16384)
	n, err := c.Recv(buf, 2*time.Second)
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return buf[:n]
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

// engineWaits is which wait each descriptor's reader is in, as the engine
// tells it (noteWait) while watchWaits is on.
var engineWaits struct {
	sync.Mutex
	of map[*pollFD]waitState
}

// watchWaits has the engine report its waits to waitOf until t ends.
func watchWaits(t *testing.T) {
	engineWaits.Lock()
	engineWaits.of = make(map[*pollFD]waitState)
	engineWaits.Unlock()
	note := func(p *pollFD, s waitState) {
		engineWaits.Lock()
		defer engineWaits.Unlock()
		if s == notWaiting {
			delete(engineWaits.of, p)
		} else {
			engineWaits.of[p] = s
		}
	}
	noteWait.Store(&note)
	t.Cleanup(func() { noteWait.Store(nil) })
}

// waitOf is the wait p's reader is in now (watchWaits must be on).
func waitOf(p *pollFD) waitState {
	engineWaits.Lock()
	defer engineWaits.Unlock()
	return engineWaits.of[p]
}

// inLoop reports whether the hot loop serves p now.
func inLoop(p *pollFD) bool {
	l := theLoop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.members {
		if m.p == p {
			return true
		}
	}
	return false
}

func (s waitState) String() string {
	switch s {
	case waitingHot:
		return "in poll(2)"
	case waitingParked:
		return "parked"
	}
	return "not waiting"
}

// parks waits until p's reader is parked.
func parks(t *testing.T, p *pollFD, what string) {
	t.Helper()
	waitFor(t, what+": the reader parking", func() bool { return waitOf(p) == waitingParked })
}

// recvInPoll starts a RecvBatch on dst (as recvAsync) and returns once it
// waits in poll(2). A reader waits there for hotIdle only: if the test was
// held up that long and found it parked, a frame from src ends that
// receive and another begins.
func recvInPoll(t *testing.T, src, dst *pollFD) <-chan recvResult {
	t.Helper()
	for try := 0; try < 5; try++ {
		ch := recvAsync(dst)
		var s waitState
		waitFor(t, "a reader waiting", func() bool { s = waitOf(dst); return s != notWaiting })
		if s == waitingHot {
			return ch
		}
		sendRaw(t, src, 1)
		waitRecv(t, "a reader that parked", ch)
	}
	t.Fatal("a reader never seen in poll(2) in 5 receives")
	return nil
}
