package main

// Scenario 13: a vhost-user host, against a frontend nobody here wrote:
// DPDK's testpmd with a virtio_user port on PATH/host/vhost-user. In the
// same run the same daemon serves the libvdeplug C client (vdeclient) as a
// vde-2 host, and the ceiling of the shared-memory path is DPDK on both
// ends (testpmd net_vhost0 as the backend, a second testpmd as its
// virtio_user frontend).
//
//	host → links, vhost-user:  testpmd txonly ─▶ multifs ─▶ link (Go client, counts)
//	host → links, vde-2:       vdeclient gen  ─▶ multifs ─▶ link (the same Go client)
//	links → host, vhost-user:  vdeclient gen (link) ─▶ multifs ─▶ testpmd rxonly
//	links → host, vde-2:       vdeclient gen (link) ─▶ multifs ─▶ vdeclient sink (host)
//	ceiling:                   testpmd (virtio_user) ◀─▶ testpmd (net_vhost0), no multifs
//
// Columns: multifs = the vhost-user host, reference = the vde-2 host (the
// same daemon, the same run), ceiling = DPDK's backend. Relay CPU per frame
// is the daemon's utime+stime over the run divided by the frames delivered
// (for the ceiling: the backend testpmd's, which polls one core at 100 %
// whatever the rate). testpmd gets two lcores (0,1) and forwards on one:
// the frontend on lcore 0, DPDK's backend on lcore 1, so a pair of them
// polls both CPUs of a 2-CPU machine while it runs.
//
// testpmd's txonly has no rate: it offers all it can, and the link (a Go
// client sharing the CPU that testpmd does not poll) gets what it has
// time for. So host → link is also measured paced, at pacedRate frames/s,
// where every frame reaches the link in both columns: multifs's
// vhostprobe source as the vhost-user host (paced as vdeclient paces,
// kicking when the device asks), against vdeclient gen -r as the vde-2
// host; no ceiling and no target, only the relay's cost per frame
// delivered when nothing is dropped.
//
// The idle cost: the daemon's CPU time (its threads' schedstat, in ns)
// over 10 s (3 s with -quick), 5 s after the last run, while testpmd is
// attached and not forwarding, in ms per second (the target, under 0.1 %
// of a CPU, is under 1 ms per second); the reference
// column is the same with an idle vde-2 host (multifs's Go client).
//
// testpmd needs hugepages: the scenario raises vm.nr_hugepages to 1536
// (3 GiB of 2 MiB pages) if it is lower and mounts hugetlbfs on
// /dev/hugepages if nothing is mounted there; with neither possible (not
// root) it is skipped with a notice.

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"multifs/control/client"
)

// pacedRate is the rate of the paced host → link rows: one the Go link
// takes whole, at 1500 B too, on a 2-CPU machine.
const pacedRate = 50_000

func init() {
	for _, d := range []string{"h2l", "l2h"} {
		for _, s := range []string{"64", "1500"} {
			targets = append(targets, target{"vhost." + d + "." + s + ".cpu", vsRef, "<=", 0.5})
		}
	}
	// 1 ms of CPU per second: 0.1 % of a CPU.
	targets = append(targets, target{"vhost.idle.cpu", absolute, "<", 1})
}

// testpmd is one dpdk-testpmd in interactive mode, driven on its stdin.
type testpmd struct {
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
}

func (b *bench) startTestpmd(name string, fwdLcore int, vdev string) (*testpmd, error) {
	bin, err := exec.LookPath("dpdk-testpmd")
	if err != nil {
		return nil, err
	}
	// -l 0,1 with the main lcore on the other one: the forwarding lcore
	// is fwdLcore.
	args := []string{"-l", "0,1", "--main-lcore", strconv.Itoa(1 - fwdLcore), "--no-pci", "--iova-mode=va",
		"--single-file-segments", "--file-prefix=mfbench-" + name, "-m", "256", "--log-level=lib.eal:error",
		"--vdev", vdev, "--", "-i", "--nb-cores=1"}
	// testpmd's printf output to a pipe is block-buffered while its
	// prompt is written at once: stdbuf makes the output line-buffered,
	// so a command's output is there when the next prompt is.
	cmd := exec.Command(bin, args...)
	if sb, err := exec.LookPath("stdbuf"); err == nil {
		cmd = exec.Command(sb, append([]string{"-oL", "-eL", bin}, args...)...)
	}
	t := &testpmd{name: name, cmd: cmd, done: make(chan struct{})}
	t.in, err = t.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outR, err := t.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	t.cmd.Stderr = t.cmd.Stdout
	log, err := os.Create(filepath.Join(b.tmp, "testpmd-"+name+".log"))
	if err != nil {
		return nil, err
	}
	if err := t.cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	b.clean.add(t.kill)
	go func() {
		defer close(t.done)
		defer log.Close()
		r := bufio.NewReader(outR)
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				log.Write(buf[:n])
				t.mu.Lock()
				t.out.Write(buf[:n])
				t.mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	if _, err := t.waitOut(0, "testpmd> ", 30*time.Second); err != nil {
		t.kill()
		return nil, fmt.Errorf("testpmd %s: no prompt: %w (see testpmd-%s.log)", name, err, name)
	}
	return t, nil
}

// mark is where the output is now: what a command prints comes after.
func (t *testpmd) mark() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.out.Len()
}

// waitOut waits until the output after from holds s; it returns that
// output.
func (t *testpmd) waitOut(from int, s string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		t.mu.Lock()
		o := t.out.String()[from:]
		t.mu.Unlock()
		if strings.Contains(o, s) {
			return o, nil
		}
		select {
		case <-t.done:
			return o, fmt.Errorf("testpmd %s exited", t.name)
		default:
		}
		if time.Now().After(deadline) {
			return o, fmt.Errorf("testpmd %s: no %q within %v", t.name, s, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// do runs one command and waits for the next prompt.
func (t *testpmd) do(cmd string) (string, error) {
	m := t.mark()
	if _, err := io.WriteString(t.in, cmd+"\n"); err != nil {
		return "", err
	}
	return t.waitOut(m, "testpmd> ", 15*time.Second)
}

var (
	reRxPackets = regexp.MustCompile(`RX-packets:\s+(\d+)`)
	reTxPackets = regexp.MustCompile(`TX-packets:\s+(\d+)`)
)

// stats returns port 0's RX and TX packet counters.
func (t *testpmd) stats() (rx, tx uint64, err error) {
	m := t.mark()
	if _, err := io.WriteString(t.in, "show port stats 0\n"); err != nil {
		return 0, 0, err
	}
	o, err := t.waitOut(m, "Tx-bps", 15*time.Second)
	if err != nil {
		return 0, 0, err
	}
	r, x := reRxPackets.FindStringSubmatch(o), reTxPackets.FindStringSubmatch(o)
	if r == nil || x == nil {
		return 0, 0, fmt.Errorf("testpmd %s: no port stats in %q", t.name, o)
	}
	rx, _ = strconv.ParseUint(r[1], 10, 64)
	tx, _ = strconv.ParseUint(x[1], 10, 64)
	return rx, tx, nil
}

func (t *testpmd) pid() int { return t.cmd.Process.Pid }

// quit asks testpmd to leave, then insists.
func (t *testpmd) quit() {
	io.WriteString(t.in, "stop\nquit\n")
	t.in.Close()
	select {
	case <-t.done:
	case <-time.After(10 * time.Second):
	}
	t.kill()
}

func (t *testpmd) kill() {
	if t.cmd.ProcessState == nil {
		t.cmd.Process.Kill()
		t.cmd.Wait()
	}
	// Its hugepage file (--single-file-segments) outlives it and holds
	// the pages: only this testpmd's own prefix goes.
	files, _ := filepath.Glob("/dev/hugepages/mfbench-" + t.name + "map_*")
	for _, f := range files {
		os.Remove(f)
	}
}

// hugepages makes sure three testpmds can have their memory at once (each
// takes more than its -m 256 here).
func hugepages() error {
	const want = 1536 // three testpmds at once: the ceiling's pair and the host
	data, err := os.ReadFile("/proc/sys/vm/nr_hugepages")
	if err != nil {
		return err
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(string(data))); n < want {
		if err := os.WriteFile("/proc/sys/vm/nr_hugepages", []byte(strconv.Itoa(want)), 0); err != nil {
			return fmt.Errorf("vm.nr_hugepages: %w", err)
		}
	}
	if mounts, err := os.ReadFile("/proc/mounts"); err == nil && strings.Contains(string(mounts), " /dev/hugepages hugetlbfs ") {
		return nil
	}
	if err := os.MkdirAll("/dev/hugepages", 0o755); err != nil {
		return err
	}
	return syscall.Mount("nodev", "/dev/hugepages", "hugetlbfs", 0, "")
}

// schedCPU is the CPU time of pid's live threads in ns (schedstat's first
// field): finer than the clock ticks of /proc/PID/stat, for the idle cost.
func schedCPU(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat"))
		if err != nil {
			continue // the thread ended
		}
		f := strings.Fields(string(data))
		if len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			sum += time.Duration(n)
		}
	}
	return sum, nil
}

// idleShare is pid's CPU over d per second of it, in ms.
func idleShare(pid int, d time.Duration) (float64, error) {
	c0, err := schedCPU(pid)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	time.Sleep(d)
	c1, err := schedCPU(pid)
	if err != nil {
		return 0, err
	}
	return float64(c1-c0) / 1e6 / time.Since(t0).Seconds(), nil
}

// vhostRow is one run of one row: frames delivered, over how long, and the
// relay's CPU.
type vhostRow struct {
	frames uint64
	taken  uint64 // frames the daemon took from the sender (host → link: the host's rx_packets; link → host: the link's)
	secs   float64
	cpu    time.Duration
}

func (r vhostRow) fps() float64 {
	if r.secs <= 0 {
		return 0
	}
	return float64(r.frames) / r.secs
}

func (r vhostRow) cpuPerFrame() float64 {
	if r.frames == 0 {
		return 0
	}
	return float64(r.cpu.Nanoseconds()) / float64(r.frames)
}

// cpuPerTaken is the relay's CPU per frame it took from the sender, whether
// the receiver got it or not (a full socket, a full ring): the work per
// frame without the drop policy's share.
func (r vhostRow) cpuPerTaken() float64 {
	if r.taken == 0 {
		return 0
	}
	return float64(r.cpu.Nanoseconds()) / float64(r.taken)
}

func (r vhostRow) share() float64 {
	if r.secs <= 0 {
		return 0
	}
	return r.cpu.Seconds() / r.secs * 100
}

// linkCounter is a link that counts every frame it receives (whatever its
// content: testpmd's txonly frames carry no sequence numbers).
type linkCounter struct {
	c      *client.Client
	mu     sync.Mutex
	frames uint64
	last   time.Time
	stop   chan struct{}
	done   chan struct{}
}

func countLink(dir string) (*linkCounter, error) {
	c, err := dialRetry(dir, "bench vhost link")
	if err != nil {
		return nil, err
	}
	l := &linkCounter{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		bufs := make([][]byte, 64)
		for i := range bufs {
			bufs[i] = make([]byte, 9300)
		}
		sizes := make([]int, len(bufs))
		for {
			n, err := c.RecvBatch(bufs, sizes, 50*time.Millisecond)
			if n > 0 {
				l.mu.Lock()
				l.frames += uint64(n)
				l.last = time.Now()
				l.mu.Unlock()
				continue
			}
			select {
			case <-l.stop:
				return
			default:
			}
			if err != nil && !isTimeout(err) {
				return
			}
		}
	}()
	return l, nil
}

func isTimeout(err error) bool {
	return os.IsTimeout(err) || strings.Contains(err.Error(), "timeout") || strings.Contains(err.Error(), "deadline")
}

// drained waits until nothing arrived for 200 ms, stops and returns the
// count and the last receipt's time.
func (l *linkCounter) drained() (uint64, time.Time) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		last := l.last
		l.mu.Unlock()
		if time.Since(last) > 200*time.Millisecond {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(l.stop)
	<-l.done
	l.c.Close()
	return l.frames, l.last
}

func (b *bench) vhost() error {
	if _, err := exec.LookPath("dpdk-testpmd"); err != nil {
		b.res.notice("dpdk-testpmd not found (apt-get install dpdk-dev): the vhost-user rows are skipped")
		return nil
	}
	if b.cclient == "" {
		b.res.notice("the real client did not build: the vhost-user rows are skipped (they compare with a vde-2 host)")
		return nil
	}
	if err := hugepages(); err != nil {
		b.res.notice("hugepages for testpmd: %v: the vhost-user rows are skipped", err)
		return nil
	}
	d, err := b.startMultifs("vhost")
	if err != nil {
		return err
	}
	sock := filepath.Join(d.path, "host", "vhost-user")
	if _, err := os.Stat(sock); err != nil {
		b.res.notice("%s: %v: this multifs has no vhost-user entry; only the ceiling is measured", sock, err)
		sock = ""
	}
	probe := ""
	if sock != "" {
		probe = filepath.Join(b.tmp, "vhostprobe")
		cmd := exec.Command("go", "build", "-o", probe, "./test/vhostprobe")
		cmd.Dir = b.root
		if out, err := cmd.CombinedOutput(); err != nil {
			b.res.notice("vhostprobe did not build, the paced rows are skipped: %v: %s", err, strings.TrimSpace(string(out)))
			probe = ""
		}
	}
	ceilSock := filepath.Join(b.tmp, "ceiling.vhost")
	back, err := b.startTestpmd("ceilback", 1, "net_vhost0,iface="+ceilSock+",queues=1")
	if err != nil {
		return err
	}
	defer back.quit()
	front, err := b.startTestpmd("ceilfront", 0, "net_virtio_user0,path="+ceilSock)
	if err != nil {
		return err
	}
	defer front.quit()

	type key struct {
		dir  string
		size int
	}
	fps, cpu, share, taken, delivered := map[key]perCol{}, map[key]perCol{}, map[key]perCol{}, map[key]perCol{}, map[key]perCol{}
	var idle, idleRef []float64
	put := func(k key, col string, r vhostRow) {
		if fps[k] == nil {
			fps[k], cpu[k], share[k], taken[k], delivered[k] = perCol{}, perCol{}, perCol{}, perCol{}, perCol{}
		}
		fps[k].put(col, r.fps())
		cpu[k].put(col, r.cpuPerFrame())
		share[k].put(col, r.share())
		if r.taken > 0 {
			taken[k].put(col, r.cpuPerTaken())
			delivered[k].put(col, float64(r.frames)/float64(r.taken)*100)
		}
	}
	keys := []key{{"h2l", 64}, {"h2l", 1500}, {"l2h", 64}, {"l2h", 1500}}
	paced := []key{{"h2lp", 64}, {"h2lp", 1500}}
	idleDur := 10 * time.Second
	if b.quick {
		idleDur = 3 * time.Second
	}
	for run := 0; run < b.runs; run++ {
		if sock != "" {
			host, err := b.startTestpmd(fmt.Sprintf("host%d", run), 0, "net_virtio_user0,path="+sock)
			if err != nil {
				return err
			}
			if err := waitFor(10*time.Second, func() bool {
				return statKey(filepath.Join(d.path, "host", "stats"), "attached") == "yes"
			}); err != nil {
				host.quit()
				return fmt.Errorf("testpmd attached to %s, but host/stats does not say attached: yes", sock)
			}
			for _, k := range keys {
				r, err := b.vhostRun(d, host, k.dir, k.size)
				if err != nil {
					host.quit()
					return fmt.Errorf("vhost-user host, %s %d B: %w", k.dir, k.size, err)
				}
				put(k, "multifs", r)
			}
			if run == 0 {
				// After a settling pause: the runs just before leave
				// work behind (the collector and the scavenger after
				// millions of frames, links leaving).
				time.Sleep(5 * time.Second)
				v, err := idleShare(d.pid, idleDur)
				if err != nil {
					return err
				}
				idle = append(idle, v)
			}
			host.quit()
			if err := waitFor(5*time.Second, func() bool {
				return statKey(filepath.Join(d.path, "host", "stats"), "attached") == "no"
			}); err != nil {
				return fmt.Errorf("testpmd quit, but host/stats still says attached")
			}
			if run == 0 {
				// The same daemon with an idle vde-2 host, for comparison.
				c, err := dialRetry(filepath.Join(d.path, "host"), "bench idle vde-2 host")
				if err != nil {
					return err
				}
				time.Sleep(5 * time.Second)
				v, err := idleShare(d.pid, idleDur)
				c.Close()
				if err != nil {
					return err
				}
				idleRef = append(idleRef, v)
			}
		}
		for _, k := range paced {
			if probe != "" {
				r, err := b.vhostPacedRun(d, probe, k.size)
				if err != nil {
					return fmt.Errorf("vhost-user host, paced %d B: %w", k.size, err)
				}
				put(k, "multifs", r)
			}
			r, err := b.vde2HostRun(d, "h2l", k.size, pacedRate)
			if err != nil {
				return fmt.Errorf("vde-2 host, paced %d B: %w", k.size, err)
			}
			put(k, "reference", r)
		}
		for _, k := range keys {
			r, err := b.vde2HostRun(d, k.dir, k.size, 0)
			if err != nil {
				return fmt.Errorf("vde-2 host, %s %d B: %w", k.dir, k.size, err)
			}
			put(k, "reference", r)
			r, err = b.dpdkRun(back, front, k.dir, k.size)
			if err != nil {
				return fmt.Errorf("ceiling, %s %d B: %w", k.dir, k.size, err)
			}
			put(k, "ceiling", r)
		}
	}
	section := fmt.Sprintf("13. vhost-user host: multifs = DPDK testpmd (virtio_user) as the host, reference = vdeclient as a vde-2 host of the same daemon, ceiling = testpmd net_vhost0 ◀▶ virtio_user; %v per run", b.dur)
	names := map[string]string{"h2l": "host → link (txonly)", "l2h": "link → host (rxonly)",
		"h2lp": fmt.Sprintf("host → link at %s f/s (paced hosts)", thousands(pacedRate))}
	for _, k := range append(keys, paced...) {
		n := fmt.Sprintf("%s %d B", names[k.dir], k.size)
		p := fmt.Sprintf("vhost.%s.%d", k.dir, k.size)
		b.addReal(section, p+".fps", n+": frames/s delivered", "fps", fps[k])
		b.addReal(section, p+".cpu", n+": relay CPU per frame", "ns", cpu[k])
		b.addReal(section, p+".share", n+": relay CPU, share of one CPU", "%", share[k])
		from, to := "the host", "the link"
		if k.dir == "l2h" {
			from, to = "the link", "the host"
		}
		if k.dir == "h2lp" {
			// Nothing is dropped (delivered shows it): per frame taken
			// is per frame delivered.
			b.addReal(section, p+".delivered", fmt.Sprintf("%s: share of the frames taken from %s that %s got", n, from, to), "%", delivered[k])
			continue
		}
		b.addReal(section, p+".delivered", fmt.Sprintf("%s: share of the frames taken from %s that %s got", n, from, to), "%", delivered[k])
		b.addReal(section, p+".cpu_taken", fmt.Sprintf("%s: relay CPU per frame taken from %s", n, from), "ns", taken[k])
	}
	if len(idle) > 0 {
		b.res.add(section, "vhost.idle.cpu", fmt.Sprintf("attached idle host: daemon CPU per second over %v (1 ms = 0.1 %% of a CPU)", idleDur), "ms", idle, idleRef)
	}
	return nil
}

// hostRx is d's host/stats rx_packets: frames taken from the host since it
// attached.
func hostRx(d *daemon) uint64 {
	n, _ := strconv.ParseUint(statKey(filepath.Join(d.path, "host", "stats"), "rx_packets"), 10, 64)
	return n
}

// statKey is key's value in the stats file ("" if absent or unreadable).
func statKey(file, key string) string {
	st, err := readStats(file)
	if err != nil {
		return ""
	}
	return st[key]
}

// vhostRun: testpmd as the vhost-user host of d, one direction, one size.
func (b *bench) vhostRun(d *daemon, host *testpmd, dir string, size int) (vhostRow, error) {
	if _, err := host.do("stop"); err != nil {
		return vhostRow{}, err
	}
	if dir == "h2l" {
		link, err := countLink(d.path)
		if err != nil {
			return vhostRow{}, err
		}
		for _, c := range []string{"set fwd txonly", fmt.Sprintf("set txpkts %d", size)} {
			if _, err := host.do(c); err != nil {
				link.drained()
				return vhostRow{}, err
			}
		}
		m, err := startCPU(d.pid)
		if err != nil {
			link.drained()
			return vhostRow{}, err
		}
		t0 := time.Now()
		taken0 := hostRx(d)
		host.do("start")
		time.Sleep(b.dur)
		host.do("stop")
		n, last := link.drained()
		c, _, err := m.stop()
		if err != nil {
			return vhostRow{}, err
		}
		if n == 0 {
			return vhostRow{}, fmt.Errorf("the link received nothing from testpmd (see testpmd-%s.log)", host.name)
		}
		return vhostRow{frames: n, taken: hostRx(d) - taken0, secs: last.Sub(t0).Seconds(), cpu: c}, nil
	}
	if _, err := host.do("set fwd rxonly"); err != nil {
		return vhostRow{}, err
	}
	rx0, _, err := host.stats()
	if err != nil {
		return vhostRow{}, err
	}
	if _, err := host.do("start"); err != nil {
		return vhostRow{}, err
	}
	r, err := b.linkGen(d, nextRun(), size, func(int64) (uint64, error) {
		rx1, _, err := host.stats()
		return rx1 - rx0, err
	})
	host.do("stop")
	return r, err
}

// linkGen runs vdeclient gen as a link of d for one run; delivered says
// how many frames reached the host.
func (b *bench) linkGen(d *daemon, id uint32, size int, delivered func(sent int64) (uint64, error)) (vhostRow, error) {
	maxN := strconv.FormatUint(min(uint64(b.dur.Seconds()*maxPerSecond)+1, 1<<32), 10)
	gen, err := b.startC(fmt.Sprintf("vhost-gen%d", id), "gen", "vde://"+d.path,
		"-i", fmt.Sprint(id), "-s", fmt.Sprint(size), "-t", fmt.Sprint(b.dur.Seconds()), "-n", maxN)
	if err != nil {
		return vhostRow{}, err
	}
	defer gen.finish()
	m, err := startCPU(d.pid)
	if err != nil {
		return vhostRow{}, err
	}
	if err := gen.say("go"); err != nil {
		return vhostRow{}, err
	}
	g, err := gen.result(b.dur + 15*time.Second)
	if err != nil {
		return vhostRow{}, err
	}
	time.Sleep(200 * time.Millisecond) // what is still queued arrives
	n, err := delivered(g["sent"])
	if err != nil {
		return vhostRow{}, err
	}
	c, _, err := m.stop()
	if err != nil {
		return vhostRow{}, err
	}
	// The generator is still joined: its link's rx_packets are what the
	// daemon took from it.
	taken := linksRx(d)
	if n == 0 {
		return vhostRow{}, fmt.Errorf("the host received none of %d frames", g["sent"])
	}
	return vhostRow{frames: n, taken: taken, secs: float64(g["end_ns"]-g["start_ns"]) / 1e9, cpu: c}, nil
}

// linksRx sums rx_packets over d's links: the frames the daemon took from
// them (the link → host runs have one sending link).
func linksRx(d *daemon) uint64 {
	files, _ := filepath.Glob(filepath.Join(d.path, "links", "*", "stats"))
	var n uint64
	for _, f := range files {
		v, _ := strconv.ParseUint(statKey(f, "rx_packets"), 10, 64)
		n += v
	}
	return n
}

// vde2HostRun: vdeclient as the vde-2 host of d; rate > 0 paces host →
// link at rate frames/s.
func (b *bench) vde2HostRun(d *daemon, dir string, size, rate int) (vhostRow, error) {
	if dir == "h2l" {
		link, err := countLink(d.path)
		if err != nil {
			return vhostRow{}, err
		}
		id := nextRun()
		maxN := strconv.FormatUint(min(uint64(b.dur.Seconds()*maxPerSecond)+1, 1<<32), 10)
		gen, err := b.startCRetry(fmt.Sprintf("vhost-hostgen%d", id), "gen", "vde://"+filepath.Join(d.path, "host"),
			"-i", fmt.Sprint(id), "-s", fmt.Sprint(size), "-t", fmt.Sprint(b.dur.Seconds()), "-n", maxN, "-r", fmt.Sprint(rate))
		if err != nil {
			link.drained()
			return vhostRow{}, err
		}
		defer gen.finish()
		m, err := startCPU(d.pid)
		if err != nil {
			link.drained()
			return vhostRow{}, err
		}
		t0 := time.Now()
		if err := gen.say("go"); err != nil {
			link.drained()
			return vhostRow{}, err
		}
		if _, err := gen.result(b.dur + 15*time.Second); err != nil {
			link.drained()
			return vhostRow{}, err
		}
		n, last := link.drained()
		c, _, err := m.stop()
		if err != nil {
			return vhostRow{}, err
		}
		taken := hostRx(d) // the host joined for this run: its counters start at 0
		if n == 0 {
			return vhostRow{}, fmt.Errorf("the link received nothing from the vde-2 host")
		}
		return vhostRow{frames: n, taken: taken, secs: last.Sub(t0).Seconds(), cpu: c}, nil
	}
	// link → host: vdeclient as the sink host, the same generator as the
	// vhost-user row's.
	id := nextRun()
	maxN := strconv.FormatUint(min(uint64(b.dur.Seconds()*maxPerSecond)+1, 1<<32), 10)
	sink, err := b.startCRetry(fmt.Sprintf("vhost-hostsink%d", id), "sink", "vde://"+filepath.Join(d.path, "host"),
		"-i", fmt.Sprint(id), "-n", maxN, "-w", fmt.Sprint(idleAfterGen.Milliseconds()), "-T", fmt.Sprint((b.dur + 10*time.Second).Seconds()))
	if err != nil {
		return vhostRow{}, err
	}
	defer sink.finish()
	return b.linkGen(d, id, size, func(sent int64) (uint64, error) {
		if err := sink.say(fmt.Sprint(sent)); err != nil {
			return 0, err
		}
		res, err := sink.result(b.dur + 15*time.Second)
		if err != nil {
			return 0, err
		}
		return uint64(res["unique"] + res["beyond"]), nil
	})
}

// vhostPacedRun: vhostprobe source as the vhost-user host of d, sending
// host → link at pacedRate frames/s for one run.
func (b *bench) vhostPacedRun(d *daemon, probe string, size int) (vhostRow, error) {
	link, err := countLink(d.path)
	if err != nil {
		return vhostRow{}, err
	}
	id := nextRun()
	ready := filepath.Join(b.tmp, fmt.Sprintf("source%d.ready", id))
	goFile := filepath.Join(b.tmp, fmt.Sprintf("source%d.go", id))
	logName := fmt.Sprintf("vhost-source%d.log", id)
	var src *proc
	for try := 0; try < 20 && src == nil; try++ {
		// The previous host may still hold the slot for a moment: the
		// source is refused, exits, and is started again.
		p, err := b.spawn(logName, probe, "source", "-path", d.path, "-rate", fmt.Sprint(pacedRate),
			"-size", fmt.Sprint(size), "-for", b.dur.String(), "-ready", ready, "-go", goFile, "-hold", "60s")
		if err != nil {
			link.drained()
			return vhostRow{}, err
		}
		waitFor(3*time.Second, func() bool { _, err := os.Stat(ready); return err == nil || p.exited() })
		if _, err := os.Stat(ready); err == nil && !p.exited() {
			src = p
			break
		}
		p.kill()
		time.Sleep(50 * time.Millisecond)
	}
	if src == nil {
		link.drained()
		return vhostRow{}, fmt.Errorf("vhostprobe source did not attach (see %s)", logName)
	}
	defer src.kill()
	m, err := startCPU(d.pid)
	if err != nil {
		link.drained()
		return vhostRow{}, err
	}
	if err := os.WriteFile(goFile, nil, 0o644); err != nil {
		link.drained()
		return vhostRow{}, err
	}
	line := regexp.MustCompile(`source sent=\d+ start_ns=(\d+)`)
	var start time.Time
	if err := waitFor(b.dur+15*time.Second, func() bool {
		out, _ := os.ReadFile(filepath.Join(b.tmp, logName))
		if m := line.FindSubmatch(out); m != nil {
			ns, _ := strconv.ParseInt(string(m[1]), 10, 64)
			start = time.Unix(0, ns)
			return true
		}
		return src.exited()
	}); err != nil || start.IsZero() {
		link.drained()
		return vhostRow{}, fmt.Errorf("vhostprobe source gave no result (see %s)", logName)
	}
	n, last := link.drained()
	c, _, err := m.stop()
	if err != nil {
		return vhostRow{}, err
	}
	taken := hostRx(d) // the source is still attached: its counters are this run's
	if n == 0 {
		return vhostRow{}, fmt.Errorf("the link received nothing from vhostprobe source")
	}
	return vhostRow{frames: n, taken: taken, secs: last.Sub(start).Seconds(), cpu: c}, nil
}

// dpdkRun: the ceiling, DPDK's backend and frontend; h2l is the frontend
// sending (txonly) to the backend (rxonly), l2h the other way.
func (b *bench) dpdkRun(back, front *testpmd, dir string, size int) (vhostRow, error) {
	tx, rx := front, back
	if dir == "l2h" {
		tx, rx = back, front
	}
	for _, c := range []struct {
		t   *testpmd
		cmd string
	}{{rx, "set fwd rxonly"}, {tx, "set fwd txonly"}, {tx, fmt.Sprintf("set txpkts %d", size)}, {rx, "start"}} {
		if _, err := c.t.do(c.cmd); err != nil {
			return vhostRow{}, err
		}
	}
	rx0, _, err := rx.stats()
	if err != nil {
		return vhostRow{}, err
	}
	m, err := startCPU(back.pid())
	if err != nil {
		return vhostRow{}, err
	}
	t0 := time.Now()
	tx.do("start")
	time.Sleep(b.dur)
	tx.do("stop")
	secs := time.Since(t0).Seconds()
	time.Sleep(50 * time.Millisecond)
	rx1, _, err := rx.stats()
	rx.do("stop")
	if err != nil {
		return vhostRow{}, err
	}
	c, _, err := m.stop()
	if err != nil {
		return vhostRow{}, err
	}
	if rx1 == rx0 {
		return vhostRow{}, fmt.Errorf("testpmd %s received nothing from %s", rx.name, tx.name)
	}
	return vhostRow{frames: rx1 - rx0, secs: secs, cpu: c}, nil
}
