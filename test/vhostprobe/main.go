// Command vhostprobe is a vhost-user frontend written from the protocol's
// specification (QEMU's docs/interop/vhost-user.rst and the virtio 1.x
// split ring), independently of multifs's backend, for tests: an honest
// one that moves numbered frames, and hostile ones that send what a
// malicious QEMU or guest could.
//
//	vhostprobe honest  -path PATH [-count N] [-size BYTES] [-rate FPS]
//	                   [-layout single|chain|indirect] [-no-event-idx]
//	                   [-hold DURATION] [-ready FILE]
//	vhostprobe hostile -path PATH -case NAME
//	vhostprobe loop    -sock SOCKET [-count N] [-size BYTES] [-layout ...]
//	vhostprobe sink    -path PATH -for DURATION [-ready FILE] [-no-event-idx] [-always-kick] [-count N [-idle D]]
//	vhostprobe cases
//
// PATH is a multifs mount: the probe attaches as the host through
// PATH/host/vhost-user (guest memory in a memfd, the receive ring kept
// full, frames sent with a virtio-net header) and joins PATH as a link
// itself (multifs's Go client) to send and receive the other side.
//
// honest sends COUNT numbered frames (test/vdeprobe's format) host → link,
// then COUNT link → host, at RATE frames/s each, and prints
//
//	honest features=0x... h2l_sent=N h2l_got=N h2l_bad=N l2h_sent=N l2h_got=N l2h_bad=N
//
// (got counts distinct intact frames, bad damaged ones); it exits 0 only
// if every frame arrived intact in both directions. -hold keeps it
// attached (and idle) that long afterwards; -ready is created once the
// rings are up.
//
// loop attaches to any vhost-user backend's SOCKET and expects what it
// sends to come back (a backend that forwards a port to itself, such as
// DPDK's testpmd with net_vhost0 in io mode): the probe checked against a
// backend nobody here wrote. It prints "loop sent=N got=N bad=N".
//
// sink attaches as the host and takes every frame given to it for
// DURATION, giving the buffers straight back and kicking only when the
// device asks (as DPDK's and Linux's drivers do), then prints "sink
// frames=N" and the host's tx_packets and tx_dropped as the daemon counts
// them: a consumer that never runs out of buffers for as long as it is
// scheduled.
//
// hostile runs one case (vhostprobe cases lists them, one per line with
// what it does) and prints
//
//	case=NAME outcome=refused|accepted|closed|survived detail="..."
//
// where refused means an error ack or the connection ended at the bad
// message, closed that the backend ended the connection later (a
// frontend that keeps misbehaving), accepted that it took the message, and
// survived that the backend still answered afterwards. A case whose
// message the backend must refuse exits 1 when it was accepted; every
// case exits 1 when the backend neither answered nor ended the connection
// (left hanging). Whether the daemon itself survived is for the caller to
// check (its mount, its ctl).
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"multifs/control/client"
)

const (
	etherType = 0x88b5
	hdrLen    = 14
	minSize   = hdrLen + 4 + 8
)

var magic = [4]byte{'m', 'f', 'p', 'r'}

// frame builds test frame seq as test/vdeprobe does.
func frame(buf []byte, seq uint64) []byte {
	for i := 0; i < 6; i++ {
		buf[i] = 0xff
	}
	copy(buf[6:12], []byte{0x02, 0, 0, 0x6d, 0x66, 0x02})
	binary.BigEndian.PutUint16(buf[12:], etherType)
	copy(buf[hdrLen:], magic[:])
	binary.BigEndian.PutUint64(buf[hdrLen+4:], seq)
	for i := minSize; i < len(buf); i++ {
		buf[i] = byte(seq) + byte(i)
	}
	return buf
}

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

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: vhostprobe honest|hostile|cases ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "honest":
		err = honest(os.Args[2:])
	case "hostile":
		err = hostile(os.Args[2:])
	case "loop":
		err = loop(os.Args[2:])
	case "sink":
		err = sink(os.Args[2:])
	case "cases":
		names := make([]string, 0, len(cases))
		for n := range cases {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Printf("%s\t%s\n", n, cases[n].what)
		}
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vhostprobe:", err)
		os.Exit(1)
	}
}

func sockPath(path string) string { return filepath.Join(path, "host", "vhost-user") }

// pacer spreads sends at rate per second in 1 ms bursts.
type pacer struct {
	start time.Time
	rate  int
}

func (p pacer) wait(sent int) {
	if p.rate <= 0 {
		return
	}
	due := p.start.Add(time.Duration(sent) * time.Second / time.Duration(p.rate))
	if d := time.Until(due); d > time.Millisecond {
		time.Sleep(d)
	}
}

func honest(args []string) error {
	fs := flag.NewFlagSet("honest", flag.ExitOnError)
	path := fs.String("path", "", "the multifs mount")
	count := fs.Int("count", 2000, "frames each way")
	size := fs.Int("size", 100, "frame size in bytes")
	rate := fs.Int("rate", 20000, "frames/s each way (0: as fast as the ring takes them)")
	layout := fs.String("layout", "single", "transmit descriptors: single, chain (two) or indirect")
	noEvent := fs.Bool("no-event-idx", false, "do not negotiate VIRTIO_RING_F_EVENT_IDX")
	hold := fs.Duration("hold", 0, "stay attached, idle, this long afterwards")
	ready := fs.String("ready", "", "create this file once attached")
	fs.Parse(args)
	if *path == "" || *size < minSize || *size > 9000 || *count < 1 {
		return fmt.Errorf("honest: bad arguments")
	}
	f, err := attach(sockPath(*path), feOpts{noEventIdx: *noEvent, layout: *layout})
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	defer f.close()
	link, err := client.Dial(*path, "vhostprobe link")
	if err != nil {
		return fmt.Errorf("join as a link: %w", err)
	}
	defer link.Close()
	if err := attachedHere(*path); err != nil {
		return err
	}
	if err := warmUp(f, link); err != nil {
		return err
	}
	if *ready != "" {
		if err := os.WriteFile(*ready, nil, 0o644); err != nil {
			return err
		}
	}

	// host → link
	type tally struct{ got, bad int }
	h2l := make(chan tally, 1)
	go func() {
		seen := make([]bool, *count)
		var t tally
		buf := make([]byte, 10000)
		for t.got < *count {
			n, err := link.Recv(buf, 3*time.Second)
			if err != nil {
				break
			}
			seq, isProbe, intact := check(buf[:n])
			switch {
			case !isProbe:
			case !intact || seq >= uint64(*count) || n != *size:
				t.bad++
			case !seen[seq]:
				seen[seq] = true
				t.got++
			}
		}
		h2l <- t
	}()
	buf := make([]byte, *size)
	p := pacer{start: time.Now(), rate: *rate}
	for i := 0; i < *count; i++ {
		p.wait(i)
		if err := f.send(frame(buf, uint64(i)), i%8 == 7 || i == *count-1); err != nil {
			return fmt.Errorf("host send %d: %w", i, err)
		}
	}
	ht := <-h2l

	// link → host
	go func() {
		buf := make([]byte, *size)
		p := pacer{start: time.Now(), rate: *rate}
		for i := 0; i < *count; i++ {
			p.wait(i)
			if err := link.Send(frame(buf, uint64(i))); err != nil {
				return
			}
		}
	}()
	seen := make([]bool, *count)
	var lt tally
	idle := time.Now()
	for lt.got < *count && time.Since(idle) < 3*time.Second {
		n, err := f.recv(100*time.Millisecond, func(b []byte) {
			seq, isProbe, intact := check(b)
			switch {
			case !isProbe:
			case !intact || seq >= uint64(*count) || len(b) != *size:
				lt.bad++
			case !seen[seq]:
				seen[seq] = true
				lt.got++
			}
		})
		if err != nil {
			return fmt.Errorf("host receive: %w", err)
		}
		if n > 0 {
			idle = time.Now()
		}
	}
	// What the daemon says it dropped: towards the link (its socket
	// full: a slow reader, not the vhost-user path), from and to the host.
	fmt.Printf("honest features=%#x h2l_sent=%d h2l_got=%d h2l_bad=%d l2h_sent=%d l2h_got=%d l2h_bad=%d host_rx_dropped=%s host_tx_dropped=%s link_tx_dropped=%d\n",
		f.features, *count, ht.got, ht.bad, *count, lt.got, lt.bad, hostStat(*path, "rx_dropped"), hostStat(*path, "tx_dropped"), linksTxDropped(*path))
	if *hold > 0 {
		time.Sleep(*hold)
	}
	if err := f.c.alive(); err != nil {
		return fmt.Errorf("the backend no longer answers: %w", err)
	}
	if ht.got != *count || lt.got != *count || ht.bad+lt.bad > 0 {
		return fmt.Errorf("frames lost or damaged")
	}
	return nil
}

func loop(args []string) error {
	fs := flag.NewFlagSet("loop", flag.ExitOnError)
	sock := fs.String("sock", "", "the backend's socket")
	count := fs.Int("count", 2000, "frames")
	size := fs.Int("size", 100, "frame size in bytes")
	layout := fs.String("layout", "single", "transmit descriptors: single, chain or indirect")
	noEvent := fs.Bool("no-event-idx", false, "do not negotiate VIRTIO_RING_F_EVENT_IDX")
	fs.Parse(args)
	f, err := attach(*sock, feOpts{noEventIdx: *noEvent, layout: *layout, allowLogAll: true})
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	defer f.close()
	seen := make([]bool, *count)
	got, bad := 0, 0
	take := func(b []byte) {
		seq, isProbe, intact := check(b)
		switch {
		case !isProbe:
		case !intact || seq >= uint64(*count) || len(b) != *size:
			bad++
		case !seen[seq]:
			seen[seq] = true
			got++
		}
	}
	buf := make([]byte, *size)
	for i := 0; i < *count; i++ {
		if err := f.send(frame(buf, uint64(i)), true); err != nil {
			return fmt.Errorf("send %d: %w", i, err)
		}
		if i%32 == 31 {
			if _, err := f.recv(0, take); err != nil {
				return err
			}
		}
	}
	for idle := time.Now(); got < *count && time.Since(idle) < 2*time.Second; {
		n, err := f.recv(100*time.Millisecond, take)
		if err != nil {
			return err
		}
		if n > 0 {
			idle = time.Now()
		}
	}
	fmt.Printf("loop features=%#x sent=%d got=%d bad=%d\n", f.features, *count, got, bad)
	if got != *count || bad > 0 {
		return fmt.Errorf("frames lost or damaged")
	}
	return nil
}

// linksTxDropped sums tx_dropped over PATH/links/*/stats: frames the
// daemon could not hand to a link (its socket full).
func linksTxDropped(path string) int {
	files, _ := filepath.Glob(filepath.Join(path, "links", "*", "stats"))
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "tx_dropped: "); ok {
				k, _ := strconv.Atoi(v)
				n += k
			}
		}
	}
	return n
}

func sink(args []string) error {
	fs := flag.NewFlagSet("sink", flag.ExitOnError)
	path := fs.String("path", "", "the multifs mount")
	dur := fs.Duration("for", 10*time.Second, "how long to take frames")
	ready := fs.String("ready", "", "create this file once attached")
	noEvent := fs.Bool("no-event-idx", false, "do not negotiate VIRTIO_RING_F_EVENT_IDX")
	loose := fs.Bool("always-kick", false, "kick after every batch of buffers given back, whether the device asked or not")
	count := fs.Uint64("count", 0, "numbered frames (seq 0..count-1) to expect: stop once all came, or after -idle without one, and print vdeprobe recv's result line (0: take frames for -for)")
	idle := fs.Duration("idle", 5*time.Second, "with -count: give up after this long without a frame")
	fs.Parse(args)
	f, err := attach(sockPath(*path), feOpts{noEventIdx: *noEvent, strictKicks: !*loose})
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	defer f.close()
	if err := attachedHere(*path); err != nil {
		return err
	}
	if *ready != "" {
		if err := os.WriteFile(*ready, nil, 0o644); err != nil {
			return err
		}
	}
	if *count > 0 {
		return sinkCount(f, *count, *idle, *dur)
	}
	n := 0
	for end := time.Now().Add(*dur); time.Now().Before(end); {
		k, err := f.recv(10*time.Millisecond, func([]byte) {})
		if err != nil {
			return err
		}
		n += k
	}
	fmt.Printf("sink frames=%d host_tx_packets=%s host_tx_dropped=%s\n", n, hostStat(*path, "tx_packets"), hostStat(*path, "tx_dropped"))
	return nil
}

// sinkCount takes frames until the count numbered ones (test/vdeprobe's
// format) have all come, or none came for idle, or max passed, and prints
// vdeprobe recv's line: received= unique= lost= dups= corrupt=. A stopped
// sink (SIGSTOP) gives no buffers back meanwhile: a host that stalls.
func sinkCount(f *frontend, count uint64, idle, max time.Duration) error {
	seen := make([]uint32, count)
	var received, unique, dups, corrupt uint64
	last := time.Now()
	for end := time.Now().Add(max); unique < count && time.Now().Before(end) && time.Since(last) < idle; {
		k, err := f.recv(10*time.Millisecond, func(b []byte) {
			seq, isProbe, intact := check(b)
			if !isProbe {
				return
			}
			received++
			if !intact || seq >= count {
				corrupt++
				return
			}
			if seen[seq] == 0 {
				unique++
			} else {
				dups++
			}
			seen[seq]++
		})
		if err != nil {
			return err
		}
		if k > 0 {
			last = time.Now()
		}
	}
	lost := count - unique
	fmt.Printf("received=%d unique=%d lost=%d dups=%d corrupt=%d\n", received, unique, lost, dups, corrupt)
	if lost != 0 || corrupt != 0 {
		return fmt.Errorf("%d lost, %d corrupt", lost, corrupt)
	}
	return nil
}
