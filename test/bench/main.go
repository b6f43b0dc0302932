// Command bench measures multifs against the reference multilink, Debian's
// vdeplug (`vde_plug multi://...`), in one run, with the same Go generator
// and sink code (package multifs/control) on both sides and the same number
// of unix socket hops:
//
//	multifs:    gen ─▶ multifs daemon ─▶ sink
//	reference:  gen ─▶ vde_plug multi:// (the multilink and its host) ─▶ sink
//
// Link→host: the generator is a link (client.Dial on PATH, or on the
// reference's multi directory) and the sink is the host (Dial on PATH/host,
// or client.Port1, the one-port switch that the reference vde_plug relays
// its host side to). Host→links swaps the roles. So every frame crosses two
// datagram sockets and one relay process in both columns. A sink takes
// every frame waiting with one recvmmsg (Client.RecvBatch), so that it
// costs little per frame and the relay, not the sink, sets the figures.
//
// Scenarios, in the order of the table:
//
//  1. link→host throughput, 64- and 1500-byte frames: the generator sends
//     as fast as Send lets it (Send waits while the socket is full) for a
//     fixed time; frames/s and Mbit/s are what the sink received divided by
//     the time from the first send to the last receipt; loss is the share of
//     sent frames the sink never saw.
//  2. host→links fan-out to 1, 2 and 8 links (half-length runs): frames/s
//     delivered to each link (the mean over the links), frames/s the host
//     got out, and loss.
//  3. latency at a steady 20,000 frames/s link→host: p50, p99 and max of
//     (receipt − send) from a monotonic timestamp in the payload.
//  4. hand-off: 10,000 frames/s from host A to host B over link 1, add
//     link 2, close link 1; frames lost (should be 0) and duplicates seen.
//     multifs closes link 1 with its close file; the reference has none, so
//     its link 1 vde_plug is killed (SIGTERM) instead.
//  5. control plane (multifs only): Dial → links/N visible, close file →
//     the client sees EOF, and `ls links` with 1,000 open links.
//  6. memory: VmRSS of the daemon (or the reference vde_plug) idle, with 100
//     and with 1,000 links, and its peak (VmHWM) after the traffic runs.
//  7. tap-to-tap TCP and 64-byte UDP with iperf3 between two network
//     namespaces, when iperf3 is installed. In both columns the multilink
//     owns its tap (multifs --host tap://, vde_plug multi:// tap://).
//
// Reading the table: one row per figure, the multifs column, the reference
// column, their ratio multifs/reference, then the target and whether multifs
// met it. For frames/s a ratio above 1 favours multifs; for latency, loss,
// times and memory a ratio below 1 does. Figures marked with ~ are medians
// of -runs runs, or of the samples for the control plane (every run is in
// the JSON). A run's throughput depends on
// both processes sharing the machine's CPUs with the generator and the sink,
// so compare the columns, not the absolute numbers, across machines.
//
//	go run ./test/bench [-quick] [-runs N] [-json FILE] [-multifs BIN] [-only tp,fan,lat,handoff,ctl,mem,iperf]
//	                   [-lat-rate FPS] [-keep]
//
// It exits 0 when it could measure, whether or not the targets were met,
// and non-zero when the bench itself failed.
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

	data []*system // the systems shared by the data-plane scenarios
}

func main() {
	os.Exit(mainRC())
}

func mainRC() int {
	quick := flag.Bool("quick", false, "short runs (CI, development): 0.25 s per measurement, one run")
	jsonOut := flag.String("json", "bench.json", "write every figure (and every run) to this JSON file")
	runs := flag.Int("runs", 3, "runs per noisy figure; the table shows their median")
	bin := flag.String("multifs", "", "use this multifs binary instead of building bin/multifs")
	keep := flag.Bool("keep", false, "keep the scratch directory with the daemons' and vde_plugs' logs")
	latRate := flag.Int("lat-rate", 20000, "frames/s of the latency scenario")
	only := flag.String("only", "", "comma-separated scenarios to run: tp,fan,lat,handoff,ctl,mem,iperf (default all)")
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
	b := &bench{quick: *quick, runs: *runs, keep: *keep, dur: time.Second, latRate: *latRate, clean: newCleaner(), res: newResults()}
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
		{"fan", b.fanOut},
		{"lat", b.latency},
		{"handoff", b.handoff},
		{"ctl", b.controlPlane},
		{"mem", b.memory},
		{"iperf", b.iperf},
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
