// Command bench measures multifs against the reference multilink, Debian's
// vdeplug (`vde_plug multi://...`), in one run, with the same clients on
// both sides and the same number of unix socket hops, and against the
// ceiling: the same clients joined directly.
//
// Two kinds of client. The Go clients (package multifs/control) batch: a
// sink takes every frame waiting with one recvmmsg. The real clients are
// vdeclient (cclient/vdeclient.c, compiled with gcc -lvdeplug into the
// scratch directory at start), which moves one frame per vde_send or
// vde_recv call and waits in poll(2) before each receive, as qemu and
// vde_plug do: these are the programs users run, and the rows that carry
// the throughput, fan-out and latency targets. When vdeclient does not
// build (no gcc or libvdeplug-dev) its rows are skipped with a notice.
//
//	Go clients, multifs:    gen ─▶ multifs daemon ─▶ sink
//	Go clients, reference:  gen ─▶ vde_plug multi://M vde://P ─▶ sink (P: client.Port1 in the bench)
//	real, multifs:          vdeclient ─▶ multifs daemon ─▶ vdeclient
//	real, reference:        vdeclient ─▶ vde_plug multi://M hub://K ─▶ vdeclient
//	real, ceiling:          vdeclient ─▶ vdeclient (holding hub://C)
//
// Link→host: the generator is a link (joins PATH, or the reference's M)
// and the sink the host (joins PATH/host, or K, or is P). Host→links swaps
// the roles. Every frame crosses two datagram sockets and one relay
// process in the multifs and reference columns.
//
// The ceiling is one hop. With libvdeplug clients a frame cannot go from
// one client to another without something that owns a socket directory
// and answers the vde-2 handshake; the least there is, is a hub:// inside
// the sink: the generator's vde_send is one sendto on a datagram socket,
// and the sink's poll + vde_recv is an epoll_wait and one read, in the
// same process that consumes the frame. That is the two clients with one
// socket between them and no relay: the physical limit of a 2-hop relay
// with the same clients on this machine, which a relay can approach (its
// hop runs beside the clients on other CPUs) but not pass. Fan-out has a
// ceiling for 1 link only: a hub inside the generator, writing each frame
// to k sinks, is no bound for a relay that hands them to k sockets in
// batches (it measured below multifs at 8 links), so k > 1 has none.
//
// The relay's cost: for each throughput row, utime+stime of the relay's
// process (the multifs daemon; the vde_plug) from /proc/PID/stat over the
// run, divided by the frames the sinks received (for fan-out: every copy
// delivered), and the share of one CPU it used. The times are clock ticks
// of 10 ms: a run uses tens to hundreds of them.
//
// Scenarios, in the order of the table:
//
//  1. link→host throughput, Go clients, 64- and 1500-byte frames: the
//     generator sends as fast as Send lets it (Send waits while the socket
//     is full) for a fixed time; frames/s and Mbit/s are what the sink
//     received divided by the time from the first send to the last
//     receipt; loss is the share of sent frames the sink never saw; the
//     relay's CPU per frame.
//  2. the same with the real clients, and the ceiling: frames/s, loss, the
//     relay's CPU per frame and share of one CPU.
//  3. the relay's CPU at fixed rates, 10,000 and 100,000 frames/s link→host
//     with the real clients, 64 B, runs twice as long: per frame and the
//     share of one CPU (what a multilink costs a VM host while traffic is
//     light).
//  4. host→links fan-out to 1, 2 and 8 links, Go clients (half-length
//     runs): frames/s delivered to each link (the mean over the links),
//     frames/s the host got out, loss, the relay's CPU per delivered frame.
//  5. the same with the real clients (the ceiling for 1 link).
//  6. latency at a steady 20,000 frames/s link→host, Go clients: p50, p99
//     and max of (receipt − send) from a monotonic timestamp in the payload.
//  7. the same with the real clients, and the ceiling.
//  8. hand-off, three ways: multifs with duplicate suppression (the
//     default), multifs with -o dedup=off on both multilinks, and the
//     reference, shown as two row groups (each multifs column beside the
//     same reference runs); round i measures the three one after the
//     other. The link is `vde_plug A B`; multifs hands it over with the
//     real `multifs handoff A OLD -- vde_plug A B` (default --overlap,
//     500ms); the reference has no close file, so the bench starts the
//     new `vde_plug A B`, waits for it to carry a frame (the first
//     duplicate at B, where that can be seen) and for the same 500ms from
//     its start, and ends the old link's vde_plug with SIGTERM. B sends a
//     frame back every 10 ms: multifs handoff waits for its new link to
//     receive one from the far side.
//     Rows 8: 10,000 numbered frames/s from host A to host B, Go clients,
//     fresh multilinks each run: a phase on link 1, one second for the
//     hand-off, a phase on the new link; frames lost and duplicates
//     delivered to host B, the new link's time to carry a frame, how long
//     both links were up and how long the hand-off took.
//     Rows 8b: between two network namespaces through taps the
//     multilinks own (as in 11; a namespace pair and a path per column,
//     made once, each run handing the link in use over to a new one), a
//     hand-off 1.1 s into each run: iperf3 TCP -i 0.5 --json, the
//     intervals' mean throughput before, during and after the hand-off,
//     retransmits over the run and during it; 64-byte UDP datagrams at
//     10,000/s, numbered, from a socket in one namespace to one in the
//     other (iperf3 counts no duplicates): lost and received twice.
//     With -quick: iperf3 -t 3 and 250 ms phases, else -t 4 and 500 ms.
//     -only handoff runs both. The first run of the multifs (dedup on)
//     and reference columns is also drawn, side by side, into -svg FILE
//     (handoff_plot.go, from what handoff_trace.go records): the frames
//     each link gave host B's multilink, what host B received (first
//     copies, duplicates) and what B's multilink dropped as duplicates,
//     and iperf3's TCP intervals, with the hand-off shaded.
//  9. control plane (multifs only): Dial → links/N visible, close file →
//     the client sees EOF, and `ls links` with 1,000 open links.
//  10. memory: VmRSS of the daemon (or the reference vde_plug) idle, with
//     100 and with 1,000 links, and its peak (VmHWM) after the Go clients'
//     runs.
//  11. tap-to-tap TCP and 64-byte UDP with iperf3 between two network
//     namespaces, when iperf3 is installed. In both columns the multilink
//     owns its tap (multifs --host tap://, vde_plug multi:// tap://).
//  12. ways in (multifs only; stream.go): link→host and host→link with
//     64-byte frames through each entry, both ends the same: vde-2 and
//     seqpacket (Go clients), QEMU's stream with one frame per write (as
//     qemu writes) and with 32 per write; frames/s and the relay's CPU
//     per frame.
//  13. a vhost-user host: DPDK's testpmd against PATH/host/vhost-user, the
//     same daemon's vde-2 host and DPDK on both ends (see vhost.go).
//
// Reading the table: one row per figure; the multifs, reference and
// ceiling columns are medians of -runs runs (marked ~); "ratio" is
// multifs/reference and "of ceiling" multifs/ceiling, each the median of
// the runs' own ratios (round i measures the columns one after the other,
// so run i of multifs is paired with run i of the reference), with their
// min-max. For frames/s a ratio above 1 favours multifs; for latency,
// loss, CPU, times and memory a ratio below 1 does.
//
// Targets (results.go): each is a ratio against the same run's
// reference or ceiling, decided on the median of the runs (-runs, default
// 5), and marked "within noise" when the runs fall on both sides of it, so
// that a reader sees which decisions another run could flip:
//
//	relay CPU per frame, real clients, 64 B at saturation   <= 0.5x ref
//	relay CPU per frame at 10,000 frames/s                  <= 1.0x ref
//	link→host frames/s, real clients, 64 and 1500 B         >= 1.25x ref, >= 0.8 of the ceiling
//	fan-out to 8 links, real clients, frames/s per link     >= 1.5x ref
//	latency p50 and p99 at 20,000 frames/s, real clients    <= 1.0x ref
//	tap-to-tap TCP (iperf3)                                 >= 1.3x ref, retransmits <= ref
//
// and the absolute ones of the hand-off (frames and UDP datagrams: 0 lost
// with and without dedup, 0 duplicates with dedup; decided on each run's
// count, the table shows their sum), the control plane and memory. The Go clients' rows carry none: they show what a batching
// client gets, beside what qemu and vde_plug get.
//
//	go run ./test/bench [-quick] [-runs N] [-json FILE] [-svg FILE] [-multifs BIN]
//	                   [-only tp,rtp,rate,fan,rfan,lat,rlat,handoff,ctl,mem,iperf,ways,vhost] [-lat-rate FPS] [-keep]
//
// The bench prints how long each scenario and the whole run took. It exits
// 0 when it could measure, whether or not the targets were met, and
// non-zero when the bench itself failed.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// bench holds the configuration and the state shared by the scenarios.
type bench struct {
	root    string // the module's root directory
	tmp     string // our own scratch directory under /tmp
	multifs string // the multifs binary
	vdePlug string // the vde_plug binary, "" when it is missing
	quick   bool
	runs    int
	keep    bool // keep the scratch directory (daemon and vde_plug logs)

	dur     time.Duration // how long one throughput/fan-out/latency run sends
	latRate int           // frames/s of the latency scenario

	clean *cleaner
	res   *results

	data []*system // the systems shared by the Go clients' data-plane scenarios

	cclient string     // the compiled real client (vdeclient), "" when it did not build
	real    []*realSys // the relays the real clients go through

	sendCount string     // the hand-off picture's counting shim (sendcount.so), "" when it did not build
	picture   *hoPicture // what the hand-off's runs recorded for the picture
}

func main() {
	os.Exit(mainRC())
}

func mainRC() int {
	quick := flag.Bool("quick", false, "short runs (CI, development): 0.25 s per measurement, one run")
	jsonOut := flag.String("json", "bench.json", "write every figure (and every run) to this JSON file")
	runs := flag.Int("runs", 5, "runs per noisy figure; the table shows their median and targets are decided on it")
	bin := flag.String("multifs", "", "use this multifs binary instead of building bin/multifs")
	keep := flag.Bool("keep", false, "keep the scratch directory with the daemons' and vde_plugs' logs")
	latRate := flag.Int("lat-rate", 20000, "frames/s of the latency scenario")
	svg := flag.String("svg", "handoff.svg", "draw the hand-off (scenario 8) into this SVG file; \"\": don't")
	only := flag.String("only", "", "comma-separated scenarios to run: tp,rtp,rate,fan,rfan,lat,rlat,handoff,ctl,mem,iperf,ways,vhost (default all)")
	flag.Parse()

	runsSet := false
	flag.Visit(func(f *flag.Flag) { runsSet = runsSet || f.Name == "runs" })
	if *quick && !runsSet {
		*runs = 1
	}
	if *runs < 1 {
		fmt.Fprintln(os.Stderr, "bench: -runs must be at least 1")
		return 2
	}
	b := &bench{quick: *quick, runs: *runs, keep: *keep, dur: time.Second, latRate: *latRate, clean: newCleaner(), res: newResults(), picture: &hoPicture{}}
	if b.quick {
		b.dur = 250 * time.Millisecond
	}
	defer b.clean.run()

	// Whatever stops us, the processes, mounts and the scratch directory go.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\nbench: %v: cleaning up\n", s)
		b.clean.run()
		os.Exit(130)
	}()
	defer func() {
		if r := recover(); r != nil {
			b.clean.run()
			panic(r)
		}
	}()

	type scenario struct {
		name string
		run  func() error
	}
	scenarios := []scenario{
		{"tp", b.linkToHost},
		{"rtp", b.realLinkToHost},
		{"rate", b.fixedRates},
		{"fan", b.fanOut},
		{"rfan", b.realFanOut},
		{"lat", b.latency},
		{"rlat", b.realLatency},
		{"handoff", b.handoff},
		{"ctl", b.controlPlane},
		{"mem", b.memory},
		{"iperf", b.iperf},
		{"ways", b.streamRows},
		{"vhost", b.vhost}, // vhost.go
	}
	want := map[string]bool{}
	for _, name := range strings.Split(*only, ",") {
		if name = strings.TrimSpace(name); name != "" {
			want[name] = true
		}
	}
	known := map[string]bool{}
	for _, s := range scenarios {
		known[s.name] = true
	}
	for name := range want {
		if !known[name] {
			fmt.Fprintf(os.Stderr, "bench: -only: unknown scenario %q\n", name)
			return 2
		}
	}
	enabled := func(name string) bool { return len(want) == 0 || want[name] }

	if err := b.setup(*bin); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}

	start := time.Now()
	for _, s := range scenarios {
		if !enabled(s.name) {
			continue
		}
		t := time.Now()
		fmt.Fprintf(os.Stderr, "bench: %s ...\n", s.name)
		if err := s.run(); err != nil {
			b.res.fail(s.name, err)
			fmt.Fprintf(os.Stderr, "bench: %s FAILED: %v\n", s.name, err)
		}
		fmt.Fprintf(os.Stderr, "bench: %s done in %.1f s\n", s.name, time.Since(t).Seconds())
	}
	b.res.elapsed = time.Since(start)
	b.res.evaluate(b.vdePlug != "")

	b.res.printTable(os.Stdout, b.header())
	if *svg != "" && enabled("handoff") {
		if err := b.drawHandoff(*svg); err != nil {
			fmt.Fprintf(os.Stderr, "bench: the hand-off picture: %v\n", err)
			return 1
		}
		fmt.Printf("\nhand-off picture: %s\n", *svg)
	}
	if *jsonOut != "" {
		if err := b.res.writeJSON(*jsonOut, b.config()); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 1
		}
		fmt.Printf("\nJSON: %s\n", *jsonOut)
	}
	if len(b.res.Errors) > 0 {
		return 1
	}
	return 0
}

// setup finds the module, makes the scratch directory, builds multifs,
// finds vde_plug and raises the open-file limit (1,000 links are 2,000 fds
// here and in the daemon, which inherits the limit).
func (b *bench) setup(bin string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	b.root = root
	b.tmp, err = os.MkdirTemp("/tmp", "multifs-bench.")
	if err != nil {
		return err
	}
	b.clean.add(func() {
		if b.keep {
			unmountScratch(b.tmp)
			fmt.Fprintf(os.Stderr, "bench: logs kept in %s\n", b.tmp)
			return
		}
		removeScratch(b.tmp)
	})

	if bin != "" {
		if b.multifs, err = filepath.Abs(bin); err != nil {
			return err
		}
	} else {
		b.multifs = filepath.Join(root, "bin", "multifs")
		fmt.Fprintf(os.Stderr, "bench: building %s\n", b.multifs)
		cmd := exec.Command("go", "build", "-o", b.multifs, "./cmd/multifs")
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building multifs: %w", err)
		}
	}
	if _, err := os.Stat(b.multifs); err != nil {
		return err
	}
	b.buildCClient()
	b.sendCount = b.buildSendCount()
	if p, err := exec.LookPath("vde_plug"); err == nil {
		b.vdePlug = p
	} else {
		b.res.notice("vde_plug not found (apt-get install vdeplug): the reference columns are skipped")
	}
	return raiseNofile(8192)
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(data), "module multifs") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("not inside the multifs module (no go.mod saying 'module multifs' above %s)", dir)
		}
		dir = parent
	}
}

func raiseNofile(want uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Max < want && os.Geteuid() == 0 {
		lim.Max = want
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raising RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur < 2200 {
		return fmt.Errorf("RLIMIT_NOFILE is %d; 1,000 links need about 2,100", lim.Cur)
	}
	return nil
}

func (b *bench) header() string {
	var u syscall.Utsname
	syscall.Uname(&u)
	ref := "vde_plug (reference) missing"
	if b.vdePlug != "" {
		ref = "reference: " + vdeplugVersion()
	}
	mode := fmt.Sprintf("runs=%d, %s per run", b.runs, b.dur)
	if b.quick {
		mode = "QUICK " + mode
	}
	return fmt.Sprintf("multifs benchmark: %d CPUs, kernel %s, %s, %s", runtime.NumCPU(), utsString(u.Release[:]), mode, ref)
}

func (b *bench) config() map[string]any {
	return map[string]any{
		"quick":       b.quick,
		"runs":        b.runs,
		"run_seconds": b.dur.Seconds(),
		"latency_fps": b.latRate,
		"multifs":     b.multifs,
		"vde_plug":    b.vdePlug,
		"reference":   vdeplugVersion(),
		"cpus":        runtime.NumCPU(),
		"vdeclient":   b.cclient,
		"go":          runtime.Version(),
	}
}

func utsString(a []int8) string {
	var sb strings.Builder
	for _, c := range a {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

var vdeplugVersion = sync.OnceValue(func() string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "vdeplug").Output()
	if err != nil || len(out) == 0 {
		return "vde_plug"
	}
	return "vdeplug " + string(out)
})
