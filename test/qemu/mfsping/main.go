// Command mfsping is the pinger of the qemu peer tests' guest
// (test/qemu/mkinitramfs.sh builds it static into the initramfs).
//
//	mfsping -c COUNT -i INTERVAL [-W WAIT] [-s SIZE] ADDR
//
// It sends COUNT ICMP echo requests to ADDR, one every INTERVAL seconds on
// a fixed schedule, waits up to WAIT seconds after the last for missing
// replies, and prints busybox ping's summary lines
//
//	--- ADDR ping statistics ---
//	N packets transmitted, M packets received, D duplicates, L% packet loss
//	round-trip min/avg/max = A/B/C ms
//
// (the duplicates part only when there are any) and then
//
//	lost n=K seq=S1 S2 ...      the first 20 sequence numbers never answered
//	dups n=D first_seq=F last_seq=L
//
// Busybox's own ping was the first choice, but it sets its raw socket's
// receive buffer to about 14 KB: a guest vCPU that the host leaves
// unscheduled for a moment then comes back to a burst of replies (four per
// request while two links are up) larger than that, and ping loses replies
// its kernel did receive (measured: 212 of 3000 with the machine loaded,
// while the guest's Icmp InEchoReps showed every one arrived). mfsping asks
// for a 4 MiB buffer, so what it counts lost was lost on the wire. L is
// rounded up, so any loss shows as at least 1%. It exits 0 if every
// request was answered, 1 otherwise, 2 on a usage or socket error.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	count := flag.Int("c", 10, "echo requests to send (at most 65536)")
	interval := flag.Float64("i", 1, "seconds between requests")
	wait := flag.Float64("W", 5, "seconds to wait for replies after the last request")
	size := flag.Int("s", 56, "payload bytes (at least 8)")
	flag.Parse()
	if flag.NArg() != 1 || *count < 1 || *count > 65536 || *interval <= 0 || *size < 8 || *size > 1400 {
		fmt.Fprintln(os.Stderr, "usage: mfsping -c COUNT -i INTERVAL [-W WAIT] [-s SIZE] ADDR")
		os.Exit(2)
	}
	addr, err := netip.ParseAddr(flag.Arg(0))
	if err != nil || !addr.Is4() {
		fmt.Fprintln(os.Stderr, "mfsping: ADDR must be an IPv4 address:", flag.Arg(0))
		os.Exit(2)
	}
	os.Exit(run(addr, *count, seconds(*interval), seconds(*wait), *size))
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// stats is what the receiver has seen, by sequence number.
type stats struct {
	mu       sync.Mutex
	got      []bool
	received int
	dups     int
	firstDup int
	lastDup  int
	rttMin   time.Duration
	rttMax   time.Duration
	rttSum   time.Duration
	done     chan struct{} // closed once every request was answered
}

func run(addr netip.Addr, count int, interval, wait time.Duration, size int) int {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_ICMP)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mfsping: raw socket:", err)
		return 2
	}
	const rcvbuf = 4 << 20
	if syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, rcvbuf) != nil {
		_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
	}
	to := &syscall.SockaddrInet4{Addr: addr.As4()}
	id := uint16(os.Getpid())
	st := &stats{got: make([]bool, count), firstDup: -1, lastDup: -1, done: make(chan struct{})}
	fmt.Printf("PING %s (%s): %d data bytes\n", addr, addr, size)

	go receive(fd, id, st)

	start := time.Now()
	pkt := make([]byte, 8+size)
	for seq := 0; seq < count; seq++ {
		if d := time.Until(start.Add(time.Duration(seq) * interval)); d > 0 {
			time.Sleep(d)
		}
		echoRequest(pkt, id, uint16(seq), time.Now())
		for {
			err := syscall.Sendto(fd, pkt, 0, to)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "mfsping: sendto:", err)
			}
			break
		}
	}
	select {
	case <-st.done:
	case <-time.After(wait):
	}
	// A moment for the duplicates of the last replies.
	time.Sleep(50 * time.Millisecond)
	return report(addr, count, st)
}

func echoRequest(pkt []byte, id, seq uint16, now time.Time) {
	pkt[0], pkt[1] = 8, 0 // echo request
	binary.BigEndian.PutUint16(pkt[2:], 0)
	binary.BigEndian.PutUint16(pkt[4:], id)
	binary.BigEndian.PutUint16(pkt[6:], seq)
	binary.BigEndian.PutUint64(pkt[8:], uint64(now.UnixNano()))
	for i := 16; i < len(pkt); i++ {
		pkt[i] = byte(i)
	}
	binary.BigEndian.PutUint16(pkt[2:], checksum(pkt))
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// receive counts the echo replies to id; a raw ICMP socket delivers the
// IP header too.
func receive(fd int, id uint16, st *stats) {
	buf := make([]byte, 65536)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return
		}
		now := time.Now()
		if n < 20 {
			continue
		}
		ihl := int(buf[0]&0x0f) * 4
		icmp := buf[ihl:n]
		if len(icmp) < 16 || icmp[0] != 0 || binary.BigEndian.Uint16(icmp[4:]) != id {
			continue
		}
		seq := int(binary.BigEndian.Uint16(icmp[6:]))
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(icmp[8:])))
		st.mu.Lock()
		if seq < len(st.got) {
			if st.got[seq] {
				st.dups++
				if st.firstDup < 0 {
					st.firstDup = seq
				}
				st.lastDup = seq
			} else {
				st.got[seq] = true
				st.received++
				rtt := now.Sub(sent)
				if st.received == 1 || rtt < st.rttMin {
					st.rttMin = rtt
				}
				st.rttMax = max(st.rttMax, rtt)
				st.rttSum += rtt
				if st.received == len(st.got) {
					close(st.done)
				}
			}
		}
		st.mu.Unlock()
	}
}

func report(addr netip.Addr, count int, st *stats) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	fmt.Printf("\n--- %s ping statistics ---\n", addr)
	fmt.Printf("%d packets transmitted, %d packets received, ", count, st.received)
	if st.dups > 0 {
		fmt.Printf("%d duplicates, ", st.dups)
	}
	loss := int(math.Ceil(float64(count-st.received) * 100 / float64(count)))
	fmt.Printf("%d%% packet loss\n", loss)
	if st.received > 0 {
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		fmt.Printf("round-trip min/avg/max = %.3f/%.3f/%.3f ms\n",
			ms(st.rttMin), ms(st.rttSum/time.Duration(st.received)), ms(st.rttMax))
	}
	var lost []string
	n := 0
	for seq, ok := range st.got {
		if !ok {
			n++
			if n <= 20 {
				lost = append(lost, fmt.Sprint(seq))
			}
		}
	}
	fmt.Printf("lost n=%d seq=%s\n", n, strings.Join(lost, " "))
	first, last := "", ""
	if st.dups > 0 {
		first, last = fmt.Sprint(st.firstDup), fmt.Sprint(st.lastDup)
	}
	fmt.Printf("dups n=%d first_seq=%s last_seq=%s\n", st.dups, first, last)
	if n > 0 {
		return 1
	}
	return 0
}
