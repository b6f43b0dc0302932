// Command vdeprobe joins a VDE multilink (or any vde-2 switch) with
// multifs's Go client and sends or receives numbered test frames, so shell
// tests can prove that nothing was lost, nothing was damaged, and whether
// duplicates were seen.
//
//	vdeprobe send   -dir DIR [-transport vde|seqpacket] -count N -rate FPS [-size BYTES]
//	                [-ready FILE -go FILE]
//	vdeprobe recv   -dir DIR [-transport vde|seqpacket|stream] -count N [-idle 3s] [-max 60s] [-ready FILE] [-beacon 10ms]
//	vdeprobe hold   -dir DIR [-transport ...] [-ready FILE] [-max 60s]
//	vdeprobe taprecv -if NAME -count N [-idle 3s] [-max 60s] [-ready FILE]
//	vdeprobe bridge -a DIR -a-transport T -b DIR -b-transport T [-ready FILE] [-max 60s]
//	vdeprobe churn  -dir PATH -cycles N [-seqpacket-every K] [-close-every M] [-frames F] [-max 50s]
//	vdeprobe soak   -dir PATH -seconds 10s [-host-every 100ms] [-link-every 50ms] [-max 40s]
//	                [-host-transports vde,seqpacket] [-link-churn=true]
//
// taprecv is recv on a network interface instead (a tap that multifs
// serves as its host, say): a packet socket bound to NAME counts the test
// frames that arrive on it, with the same result line and exit status. It
// reads on while the interface goes down and up again.
//
// DIR is a multifs PATH (join as a link) or PATH/host (join as the host);
// with -transport seqpacket the probe connects to DIR/seqpacket instead of
// speaking vde-2 on DIR/ctl.
//
// send with -go joins, creates the -ready file (if given), and sends only
// once the -go file exists: a link that is open before its frames come.
//
// recv prints one line, "received=N unique=N lost=N dups=N corrupt=N", and
// exits 0 only if every frame 0..N-1 arrived intact at least once; with
// -beacon it also sends a frame of its own at that interval while it
// receives (another ethertype, never counted), so that a link towards it
// carries frames both ways (what multifs handoff waits for). hold
// joins and waits until the daemon ends the connection, then prints "eof"
// and exits 0 (1 if -max passes first). bridge joins two multilinks and
// relays frames both ways until either side ends: a link made of a
// seqpacket side and a vde-2 side, for mixed hand-offs.
//
// churn joins and leaves PATH as a link N times in a row (see churn's
// comment), soak drives a multilink at full rate in every direction while
// the host and links come and go, and prints what it sent and received so
// the caller can check the daemon's counters (see soak's comment).
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"multifs/control/client"
	"multifs/control/wire"
	"multifs/fsys/treeclient"
	"multifs/test/probeframe"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: vdeprobe send|recv -dir DIR -count N ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "send":
		err = send(os.Args[2:])
	case "recv":
		err = recv(os.Args[2:])
	case "hold":
		err = hold(os.Args[2:])
	case "taprecv":
		err = taprecv(os.Args[2:])
	case "bridge":
		err = bridge(os.Args[2:])
	case "churn":
		err = churn(os.Args[2:])
	case "soak":
		err = soak(os.Args[2:])
	case "seqconnect":
		err = seqconnect(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vdeprobe: %v\n", err)
		os.Exit(1)
	}
}

// join connects to dir with the given transport.
func join(dir, transport, what string) (*client.Client, error) {
	switch transport {
	case "vde":
		return client.Dial(dir, fmt.Sprintf("vdeprobe %s pid=%d", what, os.Getpid()))
	case "seqpacket":
		return client.DialSeqpacket(filepath.Join(dir, "seqpacket"))
	}
	return nil, fmt.Errorf("unknown transport %q (want vde or seqpacket)", transport)
}

// markReady creates the -ready file, if one was asked for, once joined.
func markReady(path string) error {
	if path == "" {
		return nil
	}
	return os.WriteFile(path, nil, 0o644)
}

func send(args []string) error {
	fs := flag.NewFlagSet("send", flag.ExitOnError)
	dir := fs.String("dir", "", "directory to join (a multifs PATH or PATH/host)")
	count := fs.Uint64("count", 1000, "frames to send")
	rate := fs.Int("rate", 1000, "frames per second")
	size := fs.Int("size", 64, "frame size in bytes")
	transport := fs.String("transport", "vde", "vde or seqpacket")
	ready := fs.String("ready", "", "file to create once joined")
	goFile := fs.String("go", "", "send only once this file exists (polled every millisecond, for a minute at most)")
	fs.Parse(args)
	if *size < probeframe.MinSize {
		return fmt.Errorf("-size must be at least %d", probeframe.MinSize)
	}
	c, err := join(*dir, *transport, "send")
	if err != nil {
		return err
	}
	defer c.Close()
	if err := markReady(*ready); err != nil {
		return err
	}
	if *goFile != "" {
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
			if _, err := os.Stat(*goFile); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("no %s within a minute", *goFile)
			}
		}
	}
	buf := make([]byte, *size)
	interval := time.Second / time.Duration(*rate)
	start := time.Now()
	for seq := uint64(0); seq < *count; seq++ {
		if d := time.Until(start.Add(time.Duration(seq) * interval)); d > 0 {
			time.Sleep(d)
		}
		if err := c.Send(probeframe.Build(buf, seq, 0x01)); err != nil {
			return fmt.Errorf("send %d: %w", seq, err)
		}
	}
	fmt.Printf("sent=%d seconds=%.2f\n", *count, time.Since(start).Seconds())
	return nil
}

func recv(args []string) error {
	fs := flag.NewFlagSet("recv", flag.ExitOnError)
	dir := fs.String("dir", "", "directory to join (a multifs PATH or PATH/host)")
	count := fs.Uint64("count", 1000, "frames expected (seq 0..count-1)")
	idle := fs.Duration("idle", 3*time.Second, "give up after this long without a frame")
	max := fs.Duration("max", 60*time.Second, "give up after this long in all")
	ready := fs.String("ready", "", "file to create once joined")
	transport := fs.String("transport", "vde", "vde, seqpacket or stream")
	beacon := fs.Duration("beacon", 0, "send a frame of another ethertype at this interval while receiving (0: none; not with stream)")
	fs.Parse(args)
	// What recv needs of its peer: a vde-2 or seqpacket client, or a
	// stream one (QEMU's framing, DIR/stream).
	var c interface {
		Recv(buf []byte, timeout time.Duration) (int, error)
		Close() error
	}
	if *transport == "stream" {
		if *beacon > 0 {
			return fmt.Errorf("-beacon is for vde and seqpacket")
		}
		s, err := client.DialStream(filepath.Join(*dir, "stream"))
		if err != nil {
			return err
		}
		c = s
	} else {
		cl, err := join(*dir, *transport, "recv")
		if err != nil {
			return err
		}
		c = cl
		if *beacon > 0 {
			stopBeacon := make(chan struct{})
			defer close(stopBeacon)
			go sendBeacons(cl, *beacon, stopBeacon)
		}
	}
	defer c.Close()
	if err := markReady(*ready); err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	t := probeframe.NewTally(*count)
	buf := make([]byte, 65536)
	deadline := time.Now().Add(*max)
	for !t.Complete() && time.Now().Before(deadline) {
		select {
		case <-stop:
			deadline = time.Now()
			continue
		default:
		}
		n, err := c.Recv(buf, *idle)
		if err != nil {
			break
		}
		t.Add(buf, n)
	}
	// Once everything arrived, linger briefly so late duplicates count.
	if t.Complete() {
		for {
			n, err := c.Recv(buf, 200*time.Millisecond)
			if err != nil {
				break
			}
			t.Add(buf, n) // every frame is a copy now (or damaged)
		}
	}
	return t.Result()
}

// taprecv counts the test frames arriving on a network interface (see the
// command's doc).
func taprecv(args []string) error {
	fs := flag.NewFlagSet("taprecv", flag.ExitOnError)
	ifname := fs.String("if", "", "the interface to receive on")
	count := fs.Uint64("count", 1000, "frames expected (seq 0..count-1)")
	idle := fs.Duration("idle", 3*time.Second, "give up after this long without a frame")
	max := fs.Duration("max", 60*time.Second, "give up after this long in all")
	ready := fs.String("ready", "", "file to create once bound")
	fs.Parse(args)
	ifi, err := net.InterfaceByName(*ifname)
	if err != nil {
		return err
	}
	proto := int(probeframe.EtherType>>8 | probeframe.EtherType&0xff<<8) // network byte order
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer unix.Close(fd)
	// Room for every frame of a test run, so that a slow reader loses
	// none in its own socket: lost means lost before the interface.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20); err != nil {
		return fmt.Errorf("SO_RCVBUFFORCE: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
		return fmt.Errorf("bind to %s: %w", *ifname, err)
	}
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	if err := markReady(*ready); err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	t := probeframe.NewTally(*count)
	buf := make([]byte, 65536)
	deadline := time.Now().Add(*max)
	last := time.Now()
	for time.Now().Before(deadline) {
		select {
		case <-stop:
			deadline = time.Now()
			continue
		default:
		}
		quiet := *idle
		if t.Complete() {
			quiet = 200 * time.Millisecond // all arrived: late duplicates still count
		}
		if time.Since(last) > quiet {
			break
		}
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_TRUNC)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			continue
		case err == unix.ENETDOWN:
			continue // the interface went down: it is reported once, and reading goes on
		case err != nil:
			return fmt.Errorf("receive: %w", err)
		}
		last = time.Now()
		t.Add(buf, n)
	}
	return t.Result()
}

// beaconType is the ethertype of recv's beacons: IEEE local experimental 2,
// apart from the test frames'.
const beaconType = 0x88b6

// sendBeacons sends a numbered broadcast frame of beaconType every
// interval until stop is closed.
func sendBeacons(c *client.Client, interval time.Duration, stop <-chan struct{}) {
	buf := make([]byte, 64)
	for i := 0; i < 6; i++ {
		buf[i] = 0xff
	}
	copy(buf[6:12], []byte{0x02, 0, 0, 0x6d, 0x66, 0x02})
	binary.BigEndian.PutUint16(buf[12:], beaconType)
	t := time.NewTicker(interval)
	defer t.Stop()
	for n := uint64(0); ; n++ {
		binary.BigEndian.PutUint64(buf[probeframe.HdrLen:], n)
		c.TrySend(buf) // a full socket loses a beacon: the next one follows
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func hold(args []string) error {
	fs := flag.NewFlagSet("hold", flag.ExitOnError)
	dir := fs.String("dir", "", "directory to join")
	transport := fs.String("transport", "vde", "vde or seqpacket")
	ready := fs.String("ready", "", "file to create once joined")
	max := fs.Duration("max", 60*time.Second, "give up after this long")
	fs.Parse(args)
	c, err := join(*dir, *transport, "hold")
	if err != nil {
		return err
	}
	defer c.Close()
	if err := markReady(*ready); err != nil {
		return err
	}
	deadline := time.Now().Add(*max)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		if done := c.Done(); done != nil {
			select {
			case <-done:
				fmt.Println("eof")
				return nil
			case <-time.After(time.Until(deadline)):
				return errors.New("no EOF before -max")
			}
		}
		// seqpacket: EOF comes on the data socket itself
		if _, err := c.Recv(buf, time.Until(deadline)); errors.Is(err, io.EOF) {
			fmt.Println("eof")
			return nil
		} else if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
	}
	return errors.New("no EOF before -max")
}

func bridge(args []string) error {
	fs := flag.NewFlagSet("bridge", flag.ExitOnError)
	a := fs.String("a", "", "first multilink to join as a link")
	at := fs.String("a-transport", "seqpacket", "vde or seqpacket")
	b := fs.String("b", "", "second multilink to join as a link")
	bt := fs.String("b-transport", "vde", "vde or seqpacket")
	ready := fs.String("ready", "", "file to create once both sides joined")
	max := fs.Duration("max", 60*time.Second, "stop after this long")
	fs.Parse(args)
	ca, err := join(*a, *at, "bridge")
	if err != nil {
		return err
	}
	defer ca.Close()
	cb, err := join(*b, *bt, "bridge")
	if err != nil {
		return err
	}
	defer cb.Close()
	if err := markReady(*ready); err != nil {
		return err
	}
	ended := make(chan string, 2)
	relay := func(from, to *client.Client, name string) {
		buf := make([]byte, 65536)
		for {
			n, err := from.Recv(buf, 0)
			if err != nil {
				ended <- name + ": " + err.Error()
				return
			}
			if n <= len(buf) {
				to.Send(buf[:n])
			}
		}
	}
	go relay(ca, cb, "a")
	go relay(cb, ca, "b")
	watch := func(c *client.Client, name string) {
		if d := c.Done(); d != nil {
			<-d
			ended <- name + ": control stream closed"
		}
	}
	go watch(ca, "a")
	go watch(cb, "b")
	select {
	case why := <-ended:
		fmt.Println("ended", why)
		return nil
	case <-time.After(*max):
		return errors.New("still running at -max")
	}
}

// ---------------------------------------------------------------------------
// churn and soak: helpers

// peer is what churn and soak need of a joined client: client.Client for
// vde-2, seqPeer for seqpacket.
type peer interface {
	Send(frame []byte) error
	Recv(buf []byte, timeout time.Duration) (int, error)
	Done() <-chan struct{}
	Close() error
}

// seqPeer is a seqpacket client on Go's poller. churn and soak use it
// instead of client.DialSeqpacket, whose blocking read of the ack with
// SO_RCVTIMEO set fails with EINTR when a signal (Go's own preemption
// signal, say) arrives: such a socket call is never restarted (signal(7)),
// and the client then drops a connection the daemon has admitted.
type seqPeer struct {
	c   *net.UnixConn
	pid int // the process that connected, if not this one (dialSeqPeerApart)
}

// pidOf is the process the daemon sees as c's (SO_PEERCRED).
func pidOf(c peer) int {
	if p, ok := c.(*seqPeer); ok && p.pid != 0 {
		return p.pid
	}
	return os.Getpid()
}

func dialSeqPeer(path string) (*seqPeer, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	return ackedSeqPeer(c, path)
}

// dialSeqPeerApart joins through the seqpacket entry from a child process
// that connects, hands the socket over and exits. A seqpacket link closed
// through its close file has its process refused for as long as it runs
// (the newest vdeplug4's ptp client reconnects at once), so churn and soak,
// which go on joining from one process, join such links this way: the
// process the daemon remembers is gone at once.
func dialSeqPeerApart(path string) (*seqPeer, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pair[0])
	exe, err := os.Executable()
	if err != nil {
		unix.Close(pair[1])
		return nil, err
	}
	child := os.NewFile(uintptr(pair[1]), "handover")
	cmd := exec.Command(exe, "seqconnect", path)
	cmd.ExtraFiles = []*os.File{child} // fd 3
	cmd.Stderr = os.Stderr
	err = cmd.Start()
	child.Close()
	if err != nil {
		return nil, err
	}
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, rerr := unix.Recvmsg(pair[0], buf, oob, 0)
	if werr := cmd.Wait(); werr != nil {
		return nil, fmt.Errorf("seqconnect %s: %v", path, werr)
	}
	if rerr != nil {
		return nil, fmt.Errorf("seqconnect %s: %w", path, rerr)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("seqconnect %s: no socket handed over", path)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("seqconnect %s: no socket handed over", path)
	}
	f := os.NewFile(uintptr(fds[0]), path)
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	p, err := ackedSeqPeer(fc.(*net.UnixConn), path)
	if p != nil {
		p.pid = cmd.Process.Pid
	}
	return p, err
}

// seqconnect is the child of dialSeqPeerApart: connect to the seqpacket
// entry os.Args[2] and send the socket over fd 3.
func seqconnect(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: vdeprobe seqconnect PATH")
	}
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := unix.Connect(s, &unix.SockaddrUnix{Name: args[0]}); err != nil {
		return fmt.Errorf("connect %s: %w", args[0], err)
	}
	return unix.Sendmsg(3, []byte{0}, unix.UnixRights(s), nil, 0)
}

// ackedSeqPeer reads the daemon's ack byte on a connected seqpacket socket.
func ackedSeqPeer(c *net.UnixConn, path string) (*seqPeer, error) {
	c.SetReadDeadline(time.Now().Add(wire.HandshakeTimeout))
	ack := make([]byte, 16)
	n, err := c.Read(ack)
	if err != nil || n != 1 {
		c.Close()
		return nil, fmt.Errorf("no ack from %s (n=%d): %v", path, n, err)
	}
	if err := wire.ParseAck(ack[:n]); err != nil {
		c.Close()
		return nil, fmt.Errorf("refused by %s: %w", path, err)
	}
	c.SetReadDeadline(time.Time{})
	return &seqPeer{c: c}, nil
}

func (p *seqPeer) Send(frame []byte) error { _, err := p.c.Write(frame); return err }

func (p *seqPeer) Recv(buf []byte, timeout time.Duration) (int, error) {
	if timeout > 0 {
		p.c.SetReadDeadline(time.Now().Add(timeout))
	} else {
		p.c.SetReadDeadline(time.Time{})
	}
	return p.c.Read(buf) // a zero-length read is io.EOF on SOCK_SEQPACKET
}

func (p *seqPeer) Done() <-chan struct{} { return nil }

func (p *seqPeer) Close() error { return p.c.Close() }

// dialPeer joins dir with the given transport, as join does. A seqpacket
// link that will be closed through its close file joins from a process of
// its own (dialSeqPeerApart).
func dialPeer(dir, transport, what string, byFile bool) (peer, error) {
	switch transport {
	case "vde":
		return client.Dial(dir, fmt.Sprintf("vdeprobe %s pid=%d", what, os.Getpid()))
	case "seqpacket":
		if byFile {
			return dialSeqPeerApart(filepath.Join(dir, "seqpacket"))
		}
		return dialSeqPeer(filepath.Join(dir, "seqpacket"))
	}
	return nil, fmt.Errorf("unknown transport %q (want vde or seqpacket)", transport)
}

// openTree takes the multifs at PATH through its client
// (treeclient.Open), which lists, reads and closes its links for churn
// and soak. In this process, not in a Client's reader: the probe runs
// beside a daemon of the test's own, under the test's timeout, and a
// reader's round trip would slow every poll of findLink.
func openTree(dir string) (*treeclient.Tree, error) {
	t, err := treeclient.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return t, nil
}

// maxLinkID is the highest open link id, 0 if none.
func maxLinkID(t *treeclient.Tree) uint64 {
	ids, _ := t.Links()
	if len(ids) == 0 {
		return 0
	}
	return ids[len(ids)-1]
}

// findLink waits until a link newer than after appears whose stats say it
// is ours (pid) with this transport and, for vde, a description containing
// descr; it returns the newest such link. Link ids only grow, so the newest
// of ours is the one just joined, even while older ones of ours are still
// leaving.
func findLink(t *treeclient.Tree, after uint64, transport, descr string, pid int, timeout time.Duration) (uint64, error) {
	me := strconv.Itoa(pid)
	deadline := time.Now().Add(timeout)
	for {
		ids, err := t.Links()
		if err != nil {
			return 0, err
		}
		for i := len(ids) - 1; i >= 0 && ids[i] > after; i-- {
			st, err := t.Link(ids[i])
			if err != nil {
				continue // it just left
			}
			if st["pid"] == me && st["transport"] == transport && (descr == "" || strings.Contains(st["description"]+" ", descr)) {
				return ids[i], nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no link of ours (%s %q) newer than %d after %v", transport, descr, after, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// drainToEOF receives until the daemon ends the connection and everything
// it sent before has been read: for seqpacket, until EOF; for vde-2, until
// the control stream is closed and the data socket is then empty (the
// daemon closes its data socket before the control stream, so nothing can
// arrive after). It returns how many frames arrived. A zero timeout waits
// as long as it takes; otherwise it fails after timeout.
func drainToEOF(c peer, timeout time.Duration) (uint64, error) {
	var n uint64
	buf := make([]byte, 65536)
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		if !deadline.IsZero() && time.Now().After(deadline) {
			return n, fmt.Errorf("no EOF within %v (%d frames read)", timeout, n)
		}
		_, err := c.Recv(buf, 100*time.Millisecond)
		switch {
		case err == nil:
			n++
		case errors.Is(err, io.EOF):
			return n, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			if d := c.Done(); d != nil {
				select {
				case <-d:
					return n, nil // closed, and nothing came for 100 ms since
				default:
				}
			}
		default:
			return n, err
		}
	}
}

// waitEOF waits until the daemon ends the connection, discarding frames.
func waitEOF(c peer, timeout time.Duration) error {
	if d := c.Done(); d != nil {
		select {
		case <-d:
			return nil
		case <-time.After(timeout):
			return fmt.Errorf("no EOF on the control stream within %v", timeout)
		}
	}
	_, err := drainToEOF(c, timeout)
	return err
}

// ---------------------------------------------------------------------------
// churn

// churn joins PATH as a link and leaves it, -cycles times in a row, as fast
// as it goes: every K-th cycle through the seqpacket entry (the others with
// vde-2), every M-th cycle closed through PATH/links/N/close (it then
// checks that the client sees EOF within 2 s), the others closed by the
// client. Each link that leaves by itself first sends -frames test frames
// (the daemon must count every one: the peer's departure drains its socket;
// a close through the file does not, so those links send none). It prints
//
//	cycles=N vde=N seqpacket=N peer_closed=N fuse_closed=N eof_seen=N frames_sent=N seconds=S
//
// and fails at the first error or once -max has passed.
func churn(args []string) error {
	fs := flag.NewFlagSet("churn", flag.ExitOnError)
	dir := fs.String("dir", "", "the multifs PATH")
	cycles := fs.Int("cycles", 1000, "join/leave cycles")
	seqEvery := fs.Int("seqpacket-every", 3, "every K-th cycle uses the seqpacket entry (0: never)")
	closeEvery := fs.Int("close-every", 4, "every M-th cycle is closed through links/N/close (0: never)")
	frames := fs.Int("frames", 0, "test frames each link sends before leaving")
	max := fs.Duration("max", 50*time.Second, "give up after this long")
	fs.Parse(args)
	var tr *treeclient.Tree
	if *closeEvery > 0 {
		var err error
		if tr, err = openTree(*dir); err != nil {
			return err
		}
		defer tr.Close()
	}
	var nVde, nSeq, peerClosed, fuseClosed, eofSeen, sent int
	buf := make([]byte, 64)
	start := time.Now()
	deadline := start.Add(*max)
	for i := 0; i < *cycles; i++ {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d cycles within %v", i, *cycles, *max)
		}
		transport := "vde"
		if *seqEvery > 0 && i%*seqEvery == *seqEvery-1 {
			transport = "seqpacket"
		}
		byFile := *closeEvery > 0 && i%*closeEvery == *closeEvery-1
		var before uint64
		if byFile {
			before = maxLinkID(tr)
		}
		tag := fmt.Sprintf("cycle=%d", i)
		c, err := dialPeer(*dir, transport, "churn "+tag, byFile)
		if err != nil {
			return fmt.Errorf("cycle %d: join (%s): %w", i, transport, err)
		}
		if transport == "vde" {
			nVde++
		} else {
			nSeq++
		}
		for f := 0; f < *frames && !byFile; f++ {
			if err := c.Send(probeframe.Build(buf, uint64(i), 0x01)); err != nil {
				c.Close()
				return fmt.Errorf("cycle %d: send: %w", i, err)
			}
			sent++
		}
		if byFile {
			descr := ""
			if transport == "vde" {
				descr = " " + tag + " "
			}
			id, err := findLink(tr, before, transport, descr, pidOf(c), 3*time.Second)
			if err != nil {
				c.Close()
				return fmt.Errorf("cycle %d: %w", i, err)
			}
			if err := tr.CloseLink(id); err != nil {
				c.Close()
				return fmt.Errorf("cycle %d: close link %d: %w", i, id, err)
			}
			fuseClosed++
			if err := waitEOF(c, 2*time.Second); err != nil {
				c.Close()
				return fmt.Errorf("cycle %d: link %d closed through its close file: %w", i, id, err)
			}
			eofSeen++
		} else {
			peerClosed++
		}
		c.Close()
	}
	fmt.Printf("cycles=%d vde=%d seqpacket=%d peer_closed=%d fuse_closed=%d eof_seen=%d frames_sent=%d seconds=%.2f\n",
		*cycles, nVde, nSeq, peerClosed, fuseClosed, eofSeen, sent, time.Since(start).Seconds())
	return nil
}

// ---------------------------------------------------------------------------
// soak

// soak drives PATH at full rate for -seconds while the host and links come
// and go, and prints what it sent and received, for the caller to check
// against the daemon's counters:
//
//   - four steady links joined first and left last: two receivers (one
//     vde-2, one seqpacket) that read everything, and two senders that send
//     to the host at full rate (the vde-2 one also reads, the seqpacket one
//     never reads, so its frames pile up and are dropped);
//   - a host that attaches (vde-2 and seqpacket in turn), sends at full
//     rate and reads for -host-every, then leaves, over and over;
//   - a link every -link-every, in turn: a vde-2 or seqpacket link that
//     sends at full rate and reads, then leaves by itself; or a vde-2 or
//     seqpacket link that only reads and is closed through links/N/close,
//     then reads what was left up to EOF.
//
// -host-transports and -link-churn narrow the mix down (to tell which part
// of it makes a counter go wrong).
//
// At the end the steady senders leave by themselves once the host is
// detached, and the steady receivers are closed through their close files
// and read up to EOF. Every link that sends leaves by itself, so the daemon
// must count (rx_packets) every frame the probe sent. Output: one line
//
//	soak seconds=S host_sessions=N host_join_retries=N host_sent=N host_recv=N link_sessions=N link_sent=N link_recv=N errors=N
//	     host_sent_vde=N host_sessions_vde=N link_sent_vde=N link_sessions_vde=N
//
// (on the same line), where the _vde figures are the vde-2 share of the
// sessions that sent: what a vde-2 peer sent just before leaving can be
// lost in the kernel (see test/t_soak.sh), a seqpacket peer's cannot. Then
// one `vde_session sent=N peer=DESCRIPTION` line per vde-2 session that
// sent, so that its loss can be checked on its own.
// then one "steady id=N transport=T role=recv|send sent=N recv=N" line per
// steady link (recv counts only for the receivers, which read to EOF).
func soak(args []string) error {
	fs := flag.NewFlagSet("soak", flag.ExitOnError)
	dir := fs.String("dir", "", "the multifs PATH")
	seconds := fs.Duration("seconds", 10*time.Second, "how long to soak (a duration, or seconds)")
	hostEvery := fs.Duration("host-every", 100*time.Millisecond, "host session length")
	linkEvery := fs.Duration("link-every", 50*time.Millisecond, "link session length")
	max := fs.Duration("max", 0, "give up after this long (default: seconds + 30 s)")
	hostTransports := fs.String("host-transports", "vde,seqpacket", "the host's transports, taken in turn")
	linkChurn := fs.Bool("link-churn", true, "links come and go (false: only the steady links)")
	fs.Parse(args)
	hostTs := strings.Split(*hostTransports, ",")
	tr, err := openTree(*dir)
	if err != nil {
		return err
	}
	defer tr.Close()
	if *max == 0 {
		*max = *seconds + 30*time.Second
	}
	start := time.Now()
	watchdog := time.AfterFunc(*max, func() {
		fmt.Fprintf(os.Stderr, "vdeprobe: soak still running after %v\n", *max)
		os.Exit(3)
	})
	defer watchdog.Stop()

	var hostSessions, hostRetries, hostSent, hostRecv atomic.Uint64
	var linkSessions, linkSent, linkRecv, nErrors atomic.Uint64
	var hostSentVde, hostSessionsVde, linkSentVde, linkSessionsVde atomic.Uint64
	// What each vde-2 session that sent sent, by its description.
	var vdeMu sync.Mutex
	var vdeSent []string
	vdeSession := func(descr string, n uint64) {
		vdeMu.Lock()
		vdeSent = append(vdeSent, fmt.Sprintf("vde_session sent=%d peer=%s", n, descr))
		vdeMu.Unlock()
	}
	var errMu sync.Mutex
	var firstErr error
	report := func(err error) {
		nErrors.Add(1)
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}

	// sendFor sends probe frames through c until stop is closed; it
	// returns how many the socket took.
	sendFor := func(c peer, stop <-chan struct{}) uint64 {
		buf := make([]byte, 64)
		var n uint64
		for {
			select {
			case <-stop:
				return n
			default:
			}
			if err := c.Send(probeframe.Build(buf, n, 0x01)); err != nil {
				return n
			}
			n++
		}
	}
	// readAll counts frames until the connection fails (closed by us or
	// by the daemon).
	readAll := func(c peer, into *atomic.Uint64) {
		buf := make([]byte, 65536)
		for {
			if _, err := c.Recv(buf, 0); err != nil {
				return
			}
			into.Add(1)
		}
	}
	timer := func(d time.Duration) <-chan struct{} {
		ch := make(chan struct{})
		time.AfterFunc(d, func() { close(ch) })
		return ch
	}

	// --- the steady links
	type steady struct {
		id        uint64
		transport string
		role      string
		c         peer
		sent      uint64
		recv      uint64
		done      chan struct{}
	}
	var steadies []*steady
	for i, spec := range []struct{ transport, role string }{
		{"vde", "recv"}, {"seqpacket", "recv"}, {"vde", "send"}, {"seqpacket", "send"},
	} {
		before := maxLinkID(tr)
		tag := fmt.Sprintf("steady=%d", i)
		c, err := dialPeer(*dir, spec.transport, "soak "+tag, spec.role == "recv")
		if err != nil {
			return fmt.Errorf("steady link %d: %w", i, err)
		}
		descr := ""
		if spec.transport == "vde" {
			descr = " " + tag + " "
		}
		id, err := findLink(tr, before, spec.transport, descr, pidOf(c), 3*time.Second)
		if err != nil {
			return fmt.Errorf("steady link %d: %w", i, err)
		}
		steadies = append(steadies, &steady{id: id, transport: spec.transport, role: spec.role, c: c, done: make(chan struct{})})
	}
	stopSteady := make(chan struct{})
	for _, s := range steadies {
		s := s
		if s.role == "recv" {
			go func() {
				defer close(s.done)
				n, err := drainToEOF(s.c, 0)
				s.recv = n
				if err != nil {
					report(fmt.Errorf("steady link %d: %w", s.id, err))
				}
			}()
			continue
		}
		if s.transport == "vde" {
			go readAll(s.c, &linkRecv)
		}
		go func() {
			defer close(s.done)
			s.sent = sendFor(s.c, stopSteady)
		}()
	}

	end := time.Now().Add(*seconds)
	var churners sync.WaitGroup

	// --- the host, coming and going
	churners.Add(1)
	go func() {
		defer churners.Done()
		for k := 0; time.Now().Before(end); k++ {
			transport := hostTs[k%len(hostTs)]
			var c peer
			var err error
			joinBy := time.Now().Add(3 * time.Second)
			for {
				c, err = dialPeer(*dir+"/host", transport, fmt.Sprintf("soak host=%d", k), false)
				if err == nil || time.Now().After(joinBy) {
					break
				}
				hostRetries.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
			if err != nil {
				report(fmt.Errorf("host session %d (%s): %w", k, transport, err))
				return
			}
			hostSessions.Add(1)
			var rd sync.WaitGroup
			rd.Add(1)
			go func() { defer rd.Done(); readAll(c, &hostRecv) }()
			n := sendFor(c, timer(*hostEvery))
			hostSent.Add(n)
			if transport == "vde" {
				hostSentVde.Add(n)
				hostSessionsVde.Add(1)
				vdeSession(fmt.Sprintf("soak host=%d", k), n)
			}
			c.Close()
			rd.Wait()
		}
	}()

	// --- links, coming and going
	churners.Add(1)
	go func() {
		defer churners.Done()
		for k := 0; *linkChurn && time.Now().Before(end); k++ {
			kind := k % 4
			transport := "vde"
			if kind%2 == 1 {
				transport = "seqpacket"
			}
			var before uint64
			if kind >= 2 {
				before = maxLinkID(tr)
			}
			tag := fmt.Sprintf("churn=%d", k)
			c, err := dialPeer(*dir, transport, "soak "+tag, kind >= 2)
			if err != nil {
				report(fmt.Errorf("link session %d (%s): %w", k, transport, err))
				time.Sleep(*linkEvery)
				continue
			}
			linkSessions.Add(1)
			if kind < 2 {
				// sends and reads, then leaves by itself
				var rd sync.WaitGroup
				rd.Add(1)
				go func() { defer rd.Done(); readAll(c, &linkRecv) }()
				n := sendFor(c, timer(*linkEvery))
				linkSent.Add(n)
				if transport == "vde" {
					linkSentVde.Add(n)
					linkSessionsVde.Add(1)
					vdeSession("soak "+tag, n)
				}
				c.Close()
				rd.Wait()
				continue
			}
			// reads only; closed through its close file
			descr := ""
			if transport == "vde" {
				descr = " " + tag + " "
			}
			id, err := findLink(tr, before, transport, descr, pidOf(c), 3*time.Second)
			if err != nil {
				report(fmt.Errorf("link session %d: %w", k, err))
				c.Close()
				continue
			}
			got := make(chan uint64, 1)
			go func() {
				n, err := drainToEOF(c, 0)
				if err != nil {
					report(fmt.Errorf("link %d: %w", id, err))
				}
				got <- n
			}()
			time.Sleep(*linkEvery)
			if err := tr.CloseLink(id); err != nil {
				report(fmt.Errorf("close link %d: %w", id, err))
				c.Close()
			}
			select {
			case n := <-got:
				linkRecv.Add(n)
			case <-time.After(5 * time.Second):
				report(fmt.Errorf("link %d: no EOF within 5 s of its close", id))
				c.Close()
			}
			c.Close()
		}
	}()
	churners.Wait()

	// --- the end: the host is gone; the steady senders leave by
	// themselves, the steady receivers are closed through their files.
	detachBy := time.Now().Add(5 * time.Second)
	for {
		if st, err := tr.Root(); err == nil && st["host"] == "detached" {
			break
		}
		if time.Now().After(detachBy) {
			report(errors.New("the host is still attached 5 s after its last session"))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stopSteady)
	for _, s := range steadies {
		if s.role == "send" {
			<-s.done
			s.c.Close()
		}
	}
	for _, s := range steadies {
		if s.role == "recv" {
			if err := tr.CloseLink(s.id); err != nil {
				report(fmt.Errorf("close steady link %d: %w", s.id, err))
				s.c.Close()
			}
			<-s.done
			s.c.Close()
		}
	}
	var steadySent uint64
	for _, s := range steadies {
		steadySent += s.sent
	}
	fmt.Printf("soak seconds=%.2f host_sessions=%d host_join_retries=%d host_sent=%d host_recv=%d link_sessions=%d link_sent=%d link_recv=%d errors=%d"+
		" host_sent_vde=%d host_sessions_vde=%d link_sent_vde=%d link_sessions_vde=%d\n",
		time.Since(start).Seconds(), hostSessions.Load(), hostRetries.Load(), hostSent.Load(), hostRecv.Load(),
		linkSessions.Load()+uint64(len(steadies)), linkSent.Load()+steadySent, linkRecv.Load(), nErrors.Load(),
		hostSentVde.Load(), hostSessionsVde.Load(), linkSentVde.Load(), linkSessionsVde.Load())
	for _, s := range steadies {
		fmt.Printf("steady id=%d transport=%s role=%s sent=%d recv=%d\n", s.id, s.transport, s.role, s.sent, s.recv)
	}
	for _, l := range vdeSent {
		fmt.Println(l)
	}
	return firstErr
}
