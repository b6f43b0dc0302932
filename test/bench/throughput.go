package main

// Scenarios 1, 4 and 6, with the Go clients: link→host throughput,
// host→links fan-out, latency.

import (
	"fmt"
	"time"
)

const (
	idleAfterGen = 150 * time.Millisecond // a sink gives up this long after the last frame
	maxPerSecond = 10_000_000             // a generator's bound in frames per second of run
)

// dataSystems returns the multifs daemon and the reference shared by the
// data-plane scenarios, started on first use.
func (b *bench) dataSystems() ([]*system, error) {
	if b.data != nil {
		return b.data, nil
	}
	s, err := b.systems("data")
	if err != nil {
		return nil, err
	}
	b.data = s
	return s, nil
}

// perSystem collects one figure's runs per column.
type perSystem map[string][]float64

func (p perSystem) put(s *system, v float64) { p[s.name] = append(p[s.name], v) }

func (b *bench) addFigure(section, key, label, unit string, p perSystem) *Figure {
	return b.res.add(section, key, label, unit, p["multifs"], p["reference"])
}

func (b *bench) maxFrames() uint64 { return uint64(b.dur.Seconds() * maxPerSecond) }

// ---------------------------------------------------------------------------
// 1. link → host

func (b *bench) linkToHost() error {
	syss, err := b.dataSystems()
	if err != nil {
		return err
	}
	section := fmt.Sprintf("1. link → host throughput, Go clients (batched receive) for %v (generator = a link, sink = the host)", b.dur)
	for _, size := range []int{64, 1500} {
		fps, mbps, loss, cpu := perSystem{}, perSystem{}, perSystem{}, perSystem{}
		for run := 0; run < b.runs; run++ {
			// Alternate the columns so that drift in the machine's load
			// does not favour one of them.
			for _, s := range syss {
				r, err := b.linkToHostRun(s, size)
				if err != nil {
					return fmt.Errorf("%s, %d-byte frames: %w", s.name, size, err)
				}
				fps.put(s, r.fps)
				mbps.put(s, r.mbps)
				loss.put(s, r.loss)
				cpu.put(s, r.cpu)
			}
		}
		b.addFigure(section, fmt.Sprintf("link_to_host.%d.fps", size), fmt.Sprintf("%d B frames/s received", size), "fps", fps)
		b.addFigure(section, fmt.Sprintf("link_to_host.%d.mbps", size), fmt.Sprintf("%d B Mbit/s", size), "Mbit/s", mbps)
		b.addFigure(section, fmt.Sprintf("link_to_host.%d.loss", size), fmt.Sprintf("%d B loss", size), "%", loss)
		b.addFigure(section, fmt.Sprintf("link_to_host.%d.cpu", size), fmt.Sprintf("%d B relay CPU per frame", size), "ns", cpu)
	}
	return nil
}

// rate is one throughput run: cpu is the relay's CPU per frame delivered,
// in ns (utime+stime of its process over the run, see cpu.go).
type rate struct{ fps, mbps, loss, cpu float64 }

func (b *bench) linkToHostRun(s *system, size int) (rate, error) {
	gen, err := dialRetry(s.linkDir, "bench generator")
	if err != nil {
		return rate{}, err
	}
	defer gen.Close()
	run := nextRun()
	meter, err := startCPU(s.pid)
	if err != nil {
		return rate{}, err
	}
	g, rs, err := trial(
		func() genResult { return blast(gen, size, run, b.dur, b.maxFrames()) },
		[]func(<-chan uint64) sinkResult{func(sent <-chan uint64) sinkResult {
			return sink(s.host, sinkOpts{run: run}, sent, idleAfterGen, b.dur+10*time.Second)
		}},
		b.dur+15*time.Second)
	if err != nil {
		return rate{}, err
	}
	cpu, _, err := meter.stop()
	if err != nil {
		return rate{}, err
	}
	r := rs[0]
	if r.frames == 0 {
		return rate{}, fmt.Errorf("none of %d frames arrived", g.sent)
	}
	secs := float64(r.last-g.start) / 1e9
	return rate{
		fps:  float64(r.frames) / secs,
		mbps: float64(r.bytes) * 8 / secs / 1e6,
		loss: lossPct(g.sent, r.frames),
		cpu:  float64(cpu.Nanoseconds()) / float64(r.frames),
	}, nil
}

func lossPct(sent, got uint64) float64 {
	if sent == 0 || got >= sent {
		return 0
	}
	return float64(sent-got) / float64(sent) * 100
}

// ---------------------------------------------------------------------------
// 2. host → links

func (b *bench) fanOut() error {
	syss, err := b.dataSystems()
	if err != nil {
		return err
	}
	section := fmt.Sprintf("4. host → links fan-out, Go clients, 64 B frames for %v (generator = the host, sinks = k links)", b.fanDur())
	for _, k := range []int{1, 2, 8} {
		fps, loss, sentFps, cpu := perSystem{}, perSystem{}, perSystem{}, perSystem{}
		for run := 0; run < b.runs; run++ {
			for _, s := range syss {
				r, sent, err := b.fanOutRun(s, k)
				if err != nil {
					return fmt.Errorf("%s, %d links: %w", s.name, k, err)
				}
				fps.put(s, r.fps)
				loss.put(s, r.loss)
				sentFps.put(s, sent)
				cpu.put(s, r.cpu)
			}
		}
		b.addFigure(section, fmt.Sprintf("fan_out.%d.fps_per_link", k), fmt.Sprintf("%d link(s): frames/s per link", k), "fps", fps)
		b.addFigure(section, fmt.Sprintf("fan_out.%d.host_fps", k), fmt.Sprintf("%d link(s): frames/s the host sent", k), "fps", sentFps)
		b.addFigure(section, fmt.Sprintf("fan_out.%d.loss", k), fmt.Sprintf("%d link(s): loss", k), "%", loss)
		b.addFigure(section, fmt.Sprintf("fan_out.%d.cpu", k), fmt.Sprintf("%d link(s): relay CPU per delivered frame", k), "ns", cpu)
	}
	return nil
}

func (b *bench) fanOutRun(s *system, k int) (rate, float64, error) {
	links, err := dialLinks(s.linkDir, k)
	if err != nil {
		return rate{}, 0, err
	}
	defer func() {
		closeAll(links)
		s.waitLinksGone()
	}()
	run := nextRun()
	sinks := make([]func(<-chan uint64) sinkResult, k)
	for i, l := range links {
		sinks[i] = func(sent <-chan uint64) sinkResult {
			return sink(l, sinkOpts{run: run}, sent, idleAfterGen, b.dur+10*time.Second)
		}
	}
	meter, err := startCPU(s.pid)
	if err != nil {
		return rate{}, 0, err
	}
	g, rs, err := trial(func() genResult { return blast(s.host, 64, run, b.fanDur(), b.maxFrames()) }, sinks, b.dur+15*time.Second)
	if err != nil {
		return rate{}, 0, err
	}
	cpu, _, err := meter.stop()
	if err != nil {
		return rate{}, 0, err
	}
	var sum float64
	var got uint64
	for i, r := range rs {
		if r.frames == 0 {
			return rate{}, 0, fmt.Errorf("link %d received none of %d frames", i+1, g.sent)
		}
		sum += float64(r.frames) / (float64(r.last-g.start) / 1e9)
		got += r.frames
	}
	sentFps := float64(g.sent) / (float64(g.end-g.start) / 1e9)
	return rate{fps: sum / float64(k), loss: lossPct(g.sent*uint64(k), got), cpu: float64(cpu.Nanoseconds()) / float64(max(got, 1))}, sentFps, nil
}

// waitLinksGone waits (bounded) until multifs no longer lists any link, so
// that the next run does not fan out to closed sockets. The reference has
// no such view: it gets a short pause instead.
// fanDur is half a run: there are 9 fan-out runs per column and round, and
// half a second is still tens of thousands of frames per link.
func (b *bench) fanDur() time.Duration { return max(b.dur/2, 250*time.Millisecond) }

func (s *system) waitLinksGone() {
	if s.name != "multifs" {
		time.Sleep(50 * time.Millisecond)
		return
	}
	waitFor(2*time.Second, func() bool {
		n, err := openLinks(s.linkDir)
		return err == nil && n == 0
	})
}

// ---------------------------------------------------------------------------
// 3. latency

func (b *bench) latency() error {
	syss, err := b.dataSystems()
	if err != nil {
		return err
	}
	section := fmt.Sprintf("6. latency link → host, Go clients, 64 B frames at %s frames/s", thousands(int64(b.latRate)))
	p50, p99, pmax, loss, achieved := perSystem{}, perSystem{}, perSystem{}, perSystem{}, perSystem{}
	for run := 0; run < b.runs; run++ {
		for _, s := range syss {
			gen, err := dialRetry(s.linkDir, "bench latency generator")
			if err != nil {
				return err
			}
			id := nextRun()
			g, rs, err := trial(
				func() genResult { return paced(gen, 64, id, b.latRate, b.dur) },
				[]func(<-chan uint64) sinkResult{func(sent <-chan uint64) sinkResult {
					return sink(s.host, sinkOpts{run: id, latency: true}, sent, idleAfterGen, b.dur+10*time.Second)
				}},
				b.dur+15*time.Second)
			gen.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			lat := rs[0].lat
			if len(lat) == 0 {
				return fmt.Errorf("%s: none of %d frames arrived", s.name, g.sent)
			}
			sortInt64(lat)
			p50.put(s, float64(percentile(lat, 50))/1e3)
			p99.put(s, float64(percentile(lat, 99))/1e3)
			pmax.put(s, float64(lat[len(lat)-1])/1e3)
			loss.put(s, lossPct(g.sent, rs[0].frames))
			achieved.put(s, float64(g.sent)/(float64(g.end-g.start)/1e9))
		}
	}
	b.addFigure(section, "latency.p50", "p50", "µs", p50)
	b.addFigure(section, "latency.p99", "p99", "µs", p99)
	b.addFigure(section, "latency.max", "max", "µs", pmax)
	b.addFigure(section, "latency.loss", "loss", "%", loss)
	b.addFigure(section, "latency.rate", "rate achieved by the pacer", "fps", achieved)
	return nil
}
