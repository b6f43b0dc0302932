package main

// Scenarios 2, 3, 5 and 7: the real clients (vdeclient, built on
// libvdeplug) through multifs, through the reference and joined directly
// (the ceiling), and the relay's CPU per frame.
//
//	multifs:    vdeclient ─▶ multifs daemon ─▶ vdeclient
//	reference:  vdeclient ─▶ vde_plug multi://R hub://K ─▶ vdeclient
//	ceiling:    vdeclient ─▶ vdeclient holding a hub:// (no relay: one hop)

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// realSys is one relay the real clients go through: where links join and
// where the host does, and the process whose CPU is its cost.
type realSys struct {
	name     string // "multifs", "reference" or "ceiling"
	pid      int    // 0 for the ceiling: no relay
	linkURL  string
	hostURL  string
	statsDir string // multifs's mount, to wait for links to be gone
}

// realSystems starts (once) a multifs and a reference of their own for the
// real clients (the Go clients' systems have the bench as their host), and
// the ceiling's entry.
func (b *bench) realSystems() ([]*realSys, error) {
	if b.real != nil {
		return b.real, nil
	}
	if b.cclient == "" {
		return nil, errNoCClient
	}
	d, err := b.startMultifs("real")
	if err != nil {
		return nil, err
	}
	out := []*realSys{{name: "multifs", pid: d.pid, linkURL: "vde://" + d.path, hostURL: "vde://" + filepath.Join(d.path, "host"), statsDir: d.path}}
	if b.vdePlug != "" {
		dir := filepath.Join(b.tmp, "realref")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		multi, hub := filepath.Join(dir, "multi"), filepath.Join(dir, "hub")
		p, err := b.spawn("realref.vde_plug.log", b.vdePlug, "multi://"+multi, "hub://"+hub)
		if err != nil {
			return nil, err
		}
		if err := waitFor(3*time.Second, func() bool {
			return exists(filepath.Join(multi, "ctl")) && exists(filepath.Join(hub, "ctl"))
		}); err != nil {
			return nil, fmt.Errorf("vde_plug multi://%s hub://%s: no ctl after 3 s (see realref.vde_plug.log)", multi, hub)
		}
		out = append(out, &realSys{name: "reference", pid: p.pid(), linkURL: "vde://" + multi, hostURL: "vde://" + hub})
	}
	out = append(out, &realSys{name: "ceiling"})
	b.real = out
	return out, nil
}

var errNoCClient = errors.New("the real clients did not build")

// realOpts is one real-client run: k sinks; fan: the generator is the
// host and the sinks are links (else the generator is a link and the one
// sink the host); rate 0 is as fast as vde_send goes.
type realOpts struct {
	size, rate, k int
	fan, lat      bool
	dur           time.Duration
}

type realResult struct {
	sent   uint64
	start  int64 // CLOCK_MONOTONIC ns at the first send
	sinks  []map[string]int64
	cpu    time.Duration // the relay's, from go to the last sink's result
	wall   time.Duration
	hasCPU bool
}

// fps is the mean over the sinks of frames received per second, from the
// first send to each sink's last receipt.
func (r realResult) fps() float64 {
	var sum float64
	for _, s := range r.sinks {
		if secs := float64(s["last_ns"]-r.start) / 1e9; secs > 0 {
			sum += float64(s["frames"]) / secs
		}
	}
	return sum / float64(len(r.sinks))
}

func (r realResult) delivered() (n uint64) {
	for _, s := range r.sinks {
		n += uint64(s["unique"] + s["beyond"])
	}
	return n
}

// loss is the share of the copies owed to the sinks that none received.
func (r realResult) loss() float64 { return lossPct(r.sent*uint64(len(r.sinks)), r.delivered()) }

// cpuPerFrame is the relay's CPU per frame delivered, in ns.
func (r realResult) cpuPerFrame() float64 {
	if d := r.delivered(); d > 0 {
		return float64(r.cpu.Nanoseconds()) / float64(d)
	}
	return 0
}

// cpuShare is the share of one CPU the relay used, in %.
func (r realResult) cpuShare() float64 {
	if r.wall <= 0 {
		return 0
	}
	return float64(r.cpu) / float64(r.wall) * 100
}

func (b *bench) realRun(s *realSys, o realOpts) (realResult, error) {
	id := nextRun()
	genURL, sinkURL := s.linkURL, s.hostURL
	if o.fan {
		genURL, sinkURL = s.hostURL, s.linkURL
	}
	if s.name == "ceiling" {
		// One hop: the hub is inside the sink, as a vde_plug's multi://
		// or hub:// is inside the relay, and the generator joins it.
		hub := filepath.Join(b.tmp, fmt.Sprintf("ceiling%d", id))
		genURL, sinkURL = "vde://"+hub, "hub://"+hub
	}
	maxN := strconv.FormatUint(min(uint64(o.dur.Seconds()*maxPerSecond)+1, 1<<32), 10)
	genArgs := []string{"-i", fmt.Sprint(id), "-s", fmt.Sprint(o.size), "-t", fmt.Sprint(o.dur.Seconds()), "-n", maxN}
	if o.rate > 0 {
		genArgs = append(genArgs, "-r", fmt.Sprint(o.rate))
	}
	sinkArgs := []string{"-i", fmt.Sprint(id), "-n", maxN, "-w", fmt.Sprint(idleAfterGen.Milliseconds()),
		"-T", fmt.Sprint((o.dur + 10*time.Second).Seconds())}
	if o.lat {
		sinkArgs = append(sinkArgs, "-l")
	}
	var sinks []*cproc
	var gen *cproc
	defer func() {
		if gen != nil {
			gen.finish()
		}
		for _, c := range sinks {
			c.finish()
		}
		if s.statsDir != "" {
			waitFor(2*time.Second, func() bool {
				n, err := openLinks(s.statsDir)
				return err == nil && n == 0
			})
		}
	}()
	for i := 0; i < o.k; i++ {
		c, err := b.startCRetry(fmt.Sprintf("%s-sink%d-%d", s.name, id, i), "sink", sinkURL, sinkArgs...)
		if err != nil {
			return realResult{}, err
		}
		sinks = append(sinks, c)
	}
	var err error
	gen, err = b.startC(fmt.Sprintf("%s-gen%d", s.name, id), "gen", genURL, genArgs...)
	if err != nil {
		return realResult{}, err
	}
	var meter *cpuMeter
	if s.pid > 0 {
		m, err := startCPU(s.pid)
		if err != nil {
			return realResult{}, err
		}
		meter = m
	}
	limit := o.dur + 15*time.Second
	if err := gen.say("go"); err != nil {
		return realResult{}, err
	}
	g, err := gen.result(limit)
	if err != nil {
		return realResult{}, err
	}
	r := realResult{sent: uint64(g["sent"]), start: g["start_ns"]}
	for _, c := range sinks {
		if err := c.say(fmt.Sprint(r.sent)); err != nil {
			return r, err
		}
	}
	for _, c := range sinks {
		res, err := c.result(limit)
		if err != nil {
			return r, err
		}
		if res["frames"] == 0 {
			return r, fmt.Errorf("%s received none of %d frames", c.name, r.sent)
		}
		if res["dups"] > 0 {
			// No relay here repeats a frame: say so if one did.
			b.res.notice("%s: %s received %d duplicates of %d frames sent", s.name, c.name, res["dups"], r.sent)
		}
		r.sinks = append(r.sinks, res)
	}
	if meter != nil {
		if r.cpu, r.wall, err = meter.stop(); err != nil {
			return r, err
		}
		r.hasCPU = true
	}
	return r, nil
}

// perCol collects one figure's runs per column, the ceiling included.
type perCol map[string][]float64

func (p perCol) put(name string, v float64) { p[name] = append(p[name], v) }

func (b *bench) addReal(section, key, label, unit string, p perCol) *Figure {
	return b.res.add3(section, key, label, unit, p["multifs"], p["reference"], p["ceiling"])
}

// realRuns runs o on every column, runs times, alternating the columns
// within each round, and hands each result to put.
func (b *bench) realRuns(o realOpts, withCeiling bool, put func(s *realSys, r realResult)) error {
	syss, err := b.realSystems()
	if err != nil {
		return err
	}
	for run := 0; run < b.runs; run++ {
		for _, s := range syss {
			if s.name == "ceiling" && !withCeiling {
				continue
			}
			r, err := b.realRun(s, o)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			put(s, r)
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// 2. link → host, real clients

func (b *bench) realLinkToHost() error {
	if b.cclient == "" {
		return nil
	}
	section := fmt.Sprintf("2. link → host, real clients (vdeclient, one frame per call) for %v, as fast as vde_send goes", b.dur)
	for _, size := range []int{64, 1500} {
		fps, loss, cpu, share := perCol{}, perCol{}, perCol{}, perCol{}
		err := b.realRuns(realOpts{size: size, k: 1, dur: b.dur}, true, func(s *realSys, r realResult) {
			fps.put(s.name, r.fps())
			loss.put(s.name, r.loss())
			if r.hasCPU {
				cpu.put(s.name, r.cpuPerFrame())
				share.put(s.name, r.cpuShare())
			}
		})
		if err != nil {
			return fmt.Errorf("%d-byte frames: %w", size, err)
		}
		b.addReal(section, fmt.Sprintf("real.link_to_host.%d.fps", size), fmt.Sprintf("%d B frames/s received", size), "fps", fps)
		b.addReal(section, fmt.Sprintf("real.link_to_host.%d.loss", size), fmt.Sprintf("%d B loss", size), "%", loss)
		b.addReal(section, fmt.Sprintf("real.link_to_host.%d.cpu", size), fmt.Sprintf("%d B relay CPU per frame", size), "ns", cpu)
		b.addReal(section, fmt.Sprintf("real.link_to_host.%d.share", size), fmt.Sprintf("%d B relay CPU, share of one CPU", size), "%", share)
	}
	return nil
}

// ---------------------------------------------------------------------------
// 3. CPU at fixed rates

// rateDur is twice a run: at 10,000 frames/s a relay uses tens of clock
// ticks (10 ms) a second, so one tick is a few per cent of a 1 s run; twice
// as long halves that.
func (b *bench) rateDur() time.Duration { return 2 * b.dur }

func (b *bench) fixedRates() error {
	if b.cclient == "" {
		return nil
	}
	section := fmt.Sprintf("3. relay CPU at fixed rates, real clients link → host, 64 B frames for %v", b.rateDur())
	for _, rate := range []int{10_000, 100_000} {
		cpu, share, loss, got := perCol{}, perCol{}, perCol{}, perCol{}
		err := b.realRuns(realOpts{size: 64, k: 1, rate: rate, dur: b.rateDur()}, false, func(s *realSys, r realResult) {
			cpu.put(s.name, r.cpuPerFrame())
			share.put(s.name, r.cpuShare())
			loss.put(s.name, r.loss())
			got.put(s.name, r.fps())
		})
		if err != nil {
			return fmt.Errorf("%d frames/s: %w", rate, err)
		}
		n := thousands(int64(rate))
		b.addReal(section, fmt.Sprintf("rate.%d.cpu", rate), n+" f/s: relay CPU per frame", "ns", cpu)
		b.addReal(section, fmt.Sprintf("rate.%d.share", rate), n+" f/s: relay CPU, share of one CPU", "%", share)
		b.addReal(section, fmt.Sprintf("rate.%d.fps", rate), n+" f/s: frames/s received", "fps", got)
		b.addReal(section, fmt.Sprintf("rate.%d.loss", rate), n+" f/s: loss", "%", loss)
	}
	return nil
}

// ---------------------------------------------------------------------------
// 5. fan-out, real clients

func (b *bench) realFanOut() error {
	if b.cclient == "" {
		return nil
	}
	section := fmt.Sprintf("5. host → links fan-out, real clients, 64 B frames for %v (ceiling: 1 link only)", b.fanDur())
	for _, k := range []int{1, 2, 8} {
		fps, loss, cpu := perCol{}, perCol{}, perCol{}
		// The ceiling is one client joined to another: the limit of one
		// link, not of k (see the package doc).
		err := b.realRuns(realOpts{size: 64, k: k, fan: true, dur: b.fanDur()}, k == 1, func(s *realSys, r realResult) {
			fps.put(s.name, r.fps())
			loss.put(s.name, r.loss())
			if r.hasCPU {
				cpu.put(s.name, r.cpuPerFrame())
			}
		})
		if err != nil {
			return fmt.Errorf("%d links: %w", k, err)
		}
		b.addReal(section, fmt.Sprintf("real.fan_out.%d.fps_per_link", k), fmt.Sprintf("%d link(s): frames/s per link", k), "fps", fps)
		b.addReal(section, fmt.Sprintf("real.fan_out.%d.loss", k), fmt.Sprintf("%d link(s): loss", k), "%", loss)
		b.addReal(section, fmt.Sprintf("real.fan_out.%d.cpu", k), fmt.Sprintf("%d link(s): relay CPU per delivered frame", k), "ns", cpu)
	}
	return nil
}

// ---------------------------------------------------------------------------
// 7. latency, real clients

func (b *bench) realLatency() error {
	if b.cclient == "" {
		return nil
	}
	section := fmt.Sprintf("7. latency link → host, real clients, 64 B frames at %s frames/s", thousands(int64(b.latRate)))
	p50, p99, pmax, loss := perCol{}, perCol{}, perCol{}, perCol{}
	err := b.realRuns(realOpts{size: 64, k: 1, rate: b.latRate, lat: true, dur: b.dur}, true, func(s *realSys, r realResult) {
		sk := r.sinks[0]
		p50.put(s.name, float64(sk["p50_ns"])/1e3)
		p99.put(s.name, float64(sk["p99_ns"])/1e3)
		pmax.put(s.name, float64(sk["max_ns"])/1e3)
		loss.put(s.name, r.loss())
	})
	if err != nil {
		return err
	}
	b.addReal(section, "real.latency.p50", "p50", "µs", p50)
	b.addReal(section, "real.latency.p99", "p99", "µs", p99)
	b.addReal(section, "real.latency.max", "max", "µs", pmax)
	b.addReal(section, "real.latency.loss", "loss", "%", loss)
	return nil
}
