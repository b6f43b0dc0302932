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
//	vhostprobe source  -path PATH -for DURATION -rate FPS [-size BYTES] [-ready FILE] [-go FILE] [-hold D]
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
// source attaches as the host and sends numbered frames host → links at
// RATE frames/s for DURATION, paced as the bench's vdeclient gen -r (what
// is due every half interval), kicking after each lot only when the
// device asks (EVENT_IDX), as Linux's virtio-net does with xmit_more. It
// prints "source sent=N start_ns=T end_ns=T". It is the bench's paced
// host, as testpmd's txonly has no rate: with -go it waits for FILE to
// appear before it starts, so the caller can begin measuring first; with
// -hold it stays attached (and idle) that long afterwards, so the caller
// can read the host's counters.
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
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"multifs/control/client"
	"multifs/test/probeframe"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: vhostprobe honest|hostile|loop|sink|source|cases ...")
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
	case "source":
		err = source(os.Args[2:])
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
	if *path == "" || *size < probeframe.MinSize || *size > 9000 || *count < 1 {
		return fmt.Errorf("honest: bad arguments")
	}
	f, link, err := hostWithLink(*path, feOpts{noEventIdx: *noEvent, layout: *layout}, "vhostprobe link")
	if err != nil {
		return err
	}
	defer f.close()
	defer link.Close()
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
			seq, isProbe, intact := probeframe.Check(buf[:n])
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
		if err := f.send(probeframe.Build(buf, uint64(i), 0x02), i%8 == 7 || i == *count-1); err != nil {
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
			if err := link.Send(probeframe.Build(buf, uint64(i), 0x02)); err != nil {
				return
			}
		}
	}()
	seen := make([]bool, *count)
	var lt tally
	idle := time.Now()
	for lt.got < *count && time.Since(idle) < 3*time.Second {
		n, err := f.recv(100*time.Millisecond, func(b []byte) {
			seq, isProbe, intact := probeframe.Check(b)
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
		seq, isProbe, intact := probeframe.Check(b)
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
		if err := f.send(probeframe.Build(buf, uint64(i), 0x02), true); err != nil {
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
		k, _ := strconv.Atoi(fileStat(f, "tx_dropped"))
		n += k
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
	f, err := attachHost(*path, feOpts{noEventIdx: *noEvent, strictKicks: !*loose}, *ready)
	if err != nil {
		return err
	}
	defer f.close()
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

func source(args []string) error {
	fs := flag.NewFlagSet("source", flag.ExitOnError)
	path := fs.String("path", "", "the multifs mount")
	dur := fs.Duration("for", time.Second, "how long to send")
	rate := fs.Int("rate", 0, "frames/s")
	size := fs.Int("size", 64, "frame size in bytes")
	ready := fs.String("ready", "", "create this file once attached")
	goFile := fs.String("go", "", "wait for this file before sending")
	hold := fs.Duration("hold", 0, "stay attached, idle, this long afterwards")
	fs.Parse(args)
	if *path == "" || *rate <= 0 || *size < probeframe.MinSize || *size > 9000 {
		return fmt.Errorf("source: bad arguments")
	}
	f, err := attachHost(*path, feOpts{strictKicks: true}, *ready)
	if err != nil {
		return err
	}
	defer f.close()
	if *goFile != "" && !waitUntil(30*time.Second, func() bool { _, err := os.Stat(*goFile); return err == nil }) {
		return fmt.Errorf("source: %s did not appear", *goFile)
	}
	eventIdx := f.features&fEventIdx != 0
	old := f.tx.availIdx
	flush := func() error {
		var err error
		if f.tx.availIdx != old && f.tx.needKick(old, eventIdx) {
			err = f.tx.doKick()
		}
		old = f.tx.availIdx
		return err
	}
	// Paced as test/bench's vdeclient gen -r paces a vde-2 host: wake
	// every half interval (a 1 ns timer slack), send what is due, and
	// kick once for the lot if the device asked.
	unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	interval := time.Second / time.Duration(*rate)
	total := int(*dur / interval)
	nap := unix.NsecToTimespec(int64(interval / 2))
	buf := make([]byte, *size)
	start := time.Now()
	sent := 0
	for sent < total {
		due := min(int(time.Since(start)/interval)+1, total)
		for ; sent < due; sent++ {
			if err := f.send(probeframe.Build(buf, uint64(sent), 0x02), false); err != nil {
				return fmt.Errorf("send %d: %w", sent, err)
			}
		}
		if err := flush(); err != nil {
			return err
		}
		unix.Nanosleep(&nap, nil)
	}
	fmt.Printf("source sent=%d start_ns=%d end_ns=%d\n", sent, start.UnixNano(), time.Now().UnixNano())
	time.Sleep(*hold)
	return nil
}

// attachHost attaches as PATH's host, checks that PATH lists it as such,
// and creates the ready file, if one is asked for.
func attachHost(path string, o feOpts, ready string) (*frontend, error) {
	f, err := attach(sockPath(path), o)
	if err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	if err := attachedHere(path); err != nil {
		f.close()
		return nil, err
	}
	if ready != "" {
		if err := os.WriteFile(ready, nil, 0o644); err != nil {
			f.close()
			return nil, err
		}
	}
	return f, nil
}

// hostWithLink is attachHost (no ready file) and a link of PATH joined
// through multifs's Go client, to send and receive the other side; on an
// error, neither is left open.
func hostWithLink(path string, o feOpts, linkName string) (*frontend, *client.Client, error) {
	f, err := attachHost(path, o, "")
	if err != nil {
		return nil, nil, err
	}
	link, err := client.Dial(path, linkName)
	if err != nil {
		f.close()
		return nil, nil, fmt.Errorf("join as a link: %w", err)
	}
	return f, link, nil
}

// sinkCount takes frames until the count numbered ones (test/probeframe)
// have all come, or none came for idle, or max passed, and prints
// vdeprobe recv's line: received= unique= lost= dups= corrupt=. A stopped
// sink (SIGSTOP) gives no buffers back meanwhile: a host that stalls.
func sinkCount(f *frontend, count uint64, idle, max time.Duration) error {
	t := probeframe.NewTally(count)
	last := time.Now()
	for end := time.Now().Add(max); !t.Complete() && time.Now().Before(end) && time.Since(last) < idle; {
		k, err := f.recv(10*time.Millisecond, func(b []byte) { t.Add(b, len(b)) })
		if err != nil {
			return err
		}
		if k > 0 {
			last = time.Now()
		}
	}
	return t.Result()
}
