// Command vdeprobe joins a VDE multilink (or any vde-2 switch) with
// multifs's Go client and sends or receives numbered test frames, so shell
// tests can prove that nothing was lost, nothing was damaged, and whether
// duplicates were seen.
//
//	vdeprobe send   -dir DIR [-transport vde|seqpacket] -count N -rate FPS [-size BYTES]
//	vdeprobe recv   -dir DIR [-transport ...] -count N [-idle 3s] [-max 60s] [-ready FILE]
//	vdeprobe hold   -dir DIR [-transport ...] [-ready FILE] [-max 60s]
//	vdeprobe bridge -a DIR -a-transport T -b DIR -b-transport T [-ready FILE] [-max 60s]
//
// DIR is a multifs PATH (join as a link) or PATH/host (join as the host);
// with -transport seqpacket the probe connects to DIR/seqpacket instead of
// speaking vde-2 on DIR/ctl.
//
// recv prints one line, "received=N unique=N lost=N dups=N corrupt=N", and
// exits 0 only if every frame 0..N-1 arrived intact at least once. hold
// joins and waits until the daemon ends the connection, then prints "eof"
// and exits 0 (1 if -max passes first). bridge joins two multilinks and
// relays frames both ways until either side ends: a link made of a
// seqpacket side and a vde-2 side, for mixed hand-offs.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"multifs/control"
)

const (
	etherType = 0x88b5 // IEEE local experimental: never a real protocol
	hdrLen    = 14
	minSize   = hdrLen + 4 + 8
)

var magic = [4]byte{'m', 'f', 'p', 'r'}

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
	case "bridge":
		err = bridge(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vdeprobe: %v\n", err)
		os.Exit(1)
	}
}

// join connects to dir with the given transport.
func join(dir, transport, what string) (*control.Client, error) {
	switch transport {
	case "vde":
		return control.Dial(dir, fmt.Sprintf("vdeprobe %s pid=%d", what, os.Getpid()))
	case "seqpacket":
		return control.DialSeqpacket(filepath.Join(dir, "seqpacket"))
	}
	return nil, fmt.Errorf("unknown transport %q (want vde or seqpacket)", transport)
}

// frame builds test frame seq of the given size: broadcast Ethernet header,
// magic, seq, then bytes that depend on seq so damage shows.
func frame(buf []byte, seq uint64) []byte {
	for i := 0; i < 6; i++ {
		buf[i] = 0xff
	}
	copy(buf[6:12], []byte{0x02, 0, 0, 0x6d, 0x66, 0x01})
	binary.BigEndian.PutUint16(buf[12:], etherType)
	copy(buf[hdrLen:], magic[:])
	binary.BigEndian.PutUint64(buf[hdrLen+4:], seq)
	for i := minSize; i < len(buf); i++ {
		buf[i] = byte(seq) + byte(i)
	}
	return buf
}

// check returns the seq of a test frame, and whether it is intact.
func check(b []byte) (seq uint64, isProbe, intact bool) {
	if len(b) < minSize || binary.BigEndian.Uint16(b[12:]) != etherType || [4]byte(b[hdrLen:hdrLen+4]) != magic {
		return 0, false, false
	}
	seq = binary.BigEndian.Uint64(b[hdrLen+4:])
	for i := minSize; i < len(b); i++ {
		if b[i] != byte(seq)+byte(i) {
			return seq, true, false
		}
	}
	return seq, true, true
}

func send(args []string) error {
	fs := flag.NewFlagSet("send", flag.ExitOnError)
	dir := fs.String("dir", "", "directory to join (a multifs PATH or PATH/host)")
	count := fs.Uint64("count", 1000, "frames to send")
	rate := fs.Int("rate", 1000, "frames per second")
	size := fs.Int("size", 64, "frame size in bytes")
	transport := fs.String("transport", "vde", "vde or seqpacket")
	fs.Parse(args)
	if *size < minSize {
		return fmt.Errorf("-size must be at least %d", minSize)
	}
	c, err := join(*dir, *transport, "send")
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, *size)
	interval := time.Second / time.Duration(*rate)
	start := time.Now()
	for seq := uint64(0); seq < *count; seq++ {
		if d := time.Until(start.Add(time.Duration(seq) * interval)); d > 0 {
			time.Sleep(d)
		}
		if err := c.Send(frame(buf, seq)); err != nil {
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
	transport := fs.String("transport", "vde", "vde or seqpacket")
	fs.Parse(args)
	c, err := join(*dir, *transport, "recv")
	if err != nil {
		return err
	}
	defer c.Close()
	if *ready != "" {
		if err := os.WriteFile(*ready, nil, 0o644); err != nil {
			return err
		}
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	seen := make([]uint32, *count)
	var received, unique, dups, corrupt uint64
	buf := make([]byte, 65536)
	deadline := time.Now().Add(*max)
	for unique < *count && time.Now().Before(deadline) {
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
		if n > len(buf) {
			corrupt++
			continue
		}
		seq, isProbe, intact := check(buf[:n])
		if !isProbe {
			continue
		}
		received++
		if !intact || seq >= *count {
			corrupt++
			continue
		}
		if seen[seq] == 0 {
			unique++
		} else {
			dups++
		}
		seen[seq]++
	}
	// Once everything arrived, linger briefly so late duplicates count.
	if unique == *count {
		for {
			n, err := c.Recv(buf, 200*time.Millisecond)
			if err != nil {
				break
			}
			if seq, isProbe, intact := check(buf[:min(n, len(buf))]); isProbe && intact && seq < *count {
				received++
				dups++
			}
		}
	}
	lost := *count - unique
	fmt.Printf("received=%d unique=%d lost=%d dups=%d corrupt=%d\n", received, unique, lost, dups, corrupt)
	if lost != 0 || corrupt != 0 {
		return fmt.Errorf("%d lost, %d corrupt", lost, corrupt)
	}
	return nil
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
	if *ready != "" {
		if err := os.WriteFile(*ready, nil, 0o644); err != nil {
			return err
		}
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
	if *ready != "" {
		if err := os.WriteFile(*ready, nil, 0o644); err != nil {
			return err
		}
	}
	ended := make(chan string, 2)
	relay := func(from, to *control.Client, name string) {
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
	watch := func(c *control.Client, name string) {
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
