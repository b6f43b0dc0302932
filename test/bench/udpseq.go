package main

// Numbered UDP datagrams from a socket in one network namespace to one in
// another, for the hand-off's UDP rows: iperf3's UDP report has loss and
// out-of-order counts, but no count of datagrams received twice, which is
// what an overlap without duplicate suppression delivers.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

const udpSeqSize = 64

var udpMagic = [4]byte{'m', 'f', 'h', 'u'}

// udpResult is one run: datagrams sent, never received, and received more
// than once (the receipts beyond the first).
type udpResult struct {
	sent, lost, dups uint64
}

// inNetns runs fn on a thread moved into the network namespace ns (ip
// netns add's /run/netns/NS), so that the sockets fn opens are that
// namespace's; they stay so wherever they are used later. The thread is
// moved back before it is unlocked. It must not end instead, as a locked
// goroutine's thread does when the goroutine returns: the thread may be
// the one that started a child of ours (a vde_plug, an iperf3 server), and
// a thread's end sends that child its parent-death signal (SIGKILL here).
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer home.Close()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		err = fn()
		if berr := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); berr != nil {
			// Stay locked: the thread ends with the goroutine rather
			// than run other goroutines in ns.
			errc <- fmt.Errorf("setns back from %s: %w", ns, berr)
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// udpSeqRun sends rate datagrams/s for dur from nsA to ip:port in nsB,
// numbered, and counts what arrives. The receiver sends a datagram back
// every 10 ms (multifs handoff waits for its new link to carry a frame
// from the far side); the sender discards them. The receiver stops once
// every datagram arrived or none came for 300 ms after the last send, at
// most 10 s after it.
func udpSeqRun(nsA, nsB, ip string, port, rate int, dur time.Duration) (udpResult, error) {
	var res udpResult
	dst := &net.UDPAddr{IP: net.ParseIP(ip), Port: port}
	var rx, tx *net.UDPConn
	if err := inNetns(nsB, func() (err error) { rx, err = net.ListenUDP("udp4", dst); return err }); err != nil {
		return res, err
	}
	defer rx.Close()
	rx.SetReadBuffer(4 << 20)
	if err := inNetns(nsA, func() (err error) { tx, err = net.DialUDP("udp4", nil, dst); return err }); err != nil {
		return res, err
	}
	defer tx.Close()

	run := nextRun()
	total := uint64(dur.Seconds() * float64(rate))
	seen := make([]uint8, total)
	sent := make(chan uint64, 1)
	go func() { sent <- udpSend(tx, run, rate, total) }()
	go func() { // what the receiver sends back
		buf := make([]byte, 64)
		for {
			if _, err := tx.Read(buf); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return // closed
			}
		}
	}()

	buf := make([]byte, 2048)
	var from *net.UDPAddr
	lastBack := time.Now()
	hard := time.Now().Add(dur + 10*time.Second)
	lastAt := time.Now()
	unique := uint64(0)
	want, done := uint64(0), false
	for {
		if done && (unique >= want || time.Since(lastAt) > 300*time.Millisecond) {
			break
		}
		if time.Now().After(hard) {
			break
		}
		if from != nil && time.Since(lastBack) >= 10*time.Millisecond {
			rx.WriteToUDP([]byte("beacon"), from)
			lastBack = time.Now()
		}
		if !done {
			select {
			case want = <-sent:
				done, lastAt = true, time.Now()
			default:
			}
		}
		rx.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		n, addr, err := rx.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return res, err
		}
		if n != udpSeqSize || [4]byte(buf[:4]) != udpMagic || binary.BigEndian.Uint32(buf[4:]) != run {
			continue
		}
		from, lastAt = addr, time.Now()
		if seq := binary.BigEndian.Uint64(buf[8:]); seq < total {
			if seen[seq] == 0 {
				unique++
			}
			if seen[seq] < 255 {
				seen[seq]++
			}
		}
	}
	if !done {
		return res, fmt.Errorf("the UDP sender still sending %v after it started", dur+10*time.Second)
	}
	res.sent = want
	for _, c := range seen[:want] {
		switch {
		case c == 0:
			res.lost++
		case c > 1:
			res.dups += uint64(c - 1)
		}
	}
	return res, nil
}

// udpSend sends total numbered datagrams at rate per second (catching up
// each millisecond on what is due) and returns how many it sent; a
// refused send (no route yet, a full queue) is not retried: it is lost.
func udpSend(c *net.UDPConn, run uint32, rate int, total uint64) uint64 {
	d := make([]byte, udpSeqSize)
	copy(d, udpMagic[:])
	binary.BigEndian.PutUint32(d[4:], run)
	start := time.Now()
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	seq := uint64(0)
	for seq < total {
		due := min(uint64(time.Since(start).Seconds()*float64(rate))+1, total)
		for ; seq < due; seq++ {
			binary.BigEndian.PutUint64(d[8:], seq)
			c.Write(d)
		}
		<-t.C
	}
	return seq
}
