package main

// Scenario 8: the hand-off, three ways: multifs with duplicate suppression
// (the default), multifs with -o dedup=off on both multilinks, and the
// reference. Numbered frames flow host A → host B at a steady rate over
// link 1 (`vde_plug A B`) for one phase; then link 1 is handed off to a
// new `vde_plug A B` (handoff_exec.go: multifs handoff for multifs, a
// SIGTERM to link 1's vde_plug for the reference); then another phase on
// the new link alone. Host B sends a beacon every 10 ms towards A: multifs
// handoff waits for the new link to carry a frame from the far side.
// Targets: 0 frames lost in every column of multifs, 0 duplicates at host
// B with dedup. The iperf3 rows are handoff_net.go's.

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"multifs/control/client"
)

const (
	handoffRate = 10000
	// handoffBudget is the generator's time between the two phases for
	// the hand-off itself (multifs handoff's default overlap is 500ms);
	// a hand-off that takes longer shortens the last phase (a notice).
	handoffBudget = time.Second
	beaconEvery   = 10 * time.Millisecond
)

// The hand-off's columns, in the order a round measures them.
const (
	hoDedup = "multifs"
	hoOff   = "multifs dedup=off"
	hoRef   = "reference"
)

var hoColumns = []string{hoDedup, hoOff, hoRef}

// hoMultifsArgs are the options both multilinks of a multifs column get.
func hoMultifsArgs(col string) []string {
	if col == hoOff {
		return []string{"-o", "dedup=off"}
	}
	return nil
}

// handoffSetup is one column's hand-off: its two hosts, link 1, and how
// to hand link 1 over (carried gets the time of the first duplicate at B).
type handoffSetup struct {
	gen, sink *client.Client
	link1     func() (*proc, error)
	handoff   func(link1 *proc, carried <-chan time.Time) (*handoffDone, error)
	// hostDropped, if set, reads the frames B's multilink could not give
	// its host (the sink did not read in time: a loaded machine, which no
	// hand-off helps); read while the sink is still attached.
	hostDropped func() (uint64, error)
	// rec, if set, records the run for the picture (handoff_trace.go).
	rec *hoRecorder
}

type handoffResult struct {
	sent, lost, dups uint64
	lostBefore       uint64  // of lost, sent before the hand-off started: not the hand-off's
	hostDropped      int64   // frames B's multilink dropped towards its host over the run; -1: unknown
	gaps             string  // where the lost frames were, for the notices
	startAt, closeAt float64 // ms after the first frame: the hand-off started, link 1 closed
	h                *handoffDone
	late             bool // link 1 was closed after the generator had stopped
}

func (b *bench) handoff() error {
	if b.vdePlug == "" {
		b.res.notice("vde_plug not found: scenario 8, the hand-off (whose links are vde_plug), skipped")
		return nil
	}
	phase := 500 * time.Millisecond
	if b.quick {
		phase = 250 * time.Millisecond
	}
	results := map[string][]*handoffResult{}
	for run := 0; run < b.runs; run++ {
		for _, col := range hoColumns {
			var r *handoffResult
			var err error
			if col == hoRef {
				r, err = b.handoffRef(phase, run)
			} else {
				r, err = b.handoffMultifs(col, phase, run)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", col, err)
			}
			results[col] = append(results[col], r)
		}
	}
	b.res.notice("hand-off: the reference has no close file; its link 1's vde_plug is ended by SIGTERM %v after its new link started, once that link carried a frame (under iperf3: %v after, unseen)", hoOverlap, hoOverlap)
	total := fmt.Sprintf("%v + %v + %v", phase, handoffBudget, phase)
	for _, col := range []string{hoDedup, hoOff} {
		section := fmt.Sprintf("8. hand-off (multifs handoff), %s frames/s host A → host B for %s: %s beside the reference",
			thousands(handoffRate), total, hoLabel(col))
		key := hoKey(col)
		pair := func(f func(*handoffResult) float64) perSystem {
			p := perSystem{}
			for _, name := range []string{col, hoRef} {
				out := "multifs"
				if name == hoRef {
					out = "reference"
				}
				for _, h := range results[name] {
					p[out] = append(p[out], f(h))
				}
			}
			return p
		}
		b.sumFigure(section, key+"lost", "frames lost at host B", "frames", pair(func(h *handoffResult) float64 { return float64(h.lost) }))
		b.sumFigure(section, key+"dups", "duplicates delivered to host B", "frames", pair(func(h *handoffResult) float64 { return float64(h.dups) }))
		b.addFigure(section, key+"sent", "frames sent", "frames", pair(func(h *handoffResult) float64 { return float64(h.sent) }))
		f := b.addFigure(section, key+"ready_ms", "new link started → carried a frame", "ms", pair(func(h *handoffResult) float64 { return h.h.readyMs }))
		f.Note = "multifs: handoff's ready_ms; reference: B's first duplicate"
		b.addFigure(section, key+"overlap_ms", "both links up", "ms", pair(func(h *handoffResult) float64 { return h.h.overlapMs }))
		b.addFigure(section, key+"took_ms", "hand-off started → link 1 closed", "ms", pair(func(h *handoffResult) float64 { return ms(h.h.endAt.Sub(h.h.startAt)) }))
	}
	for _, name := range hoColumns {
		for i, h := range results[name] {
			if h.late {
				b.res.notice("hand-off (%s, run %d): link 1 was closed at %.0f ms, after the generator had stopped: the last phase had no frames", name, i+1, h.closeAt)
			}
			if h.lost > 0 {
				dropped := "-"
				if h.hostDropped >= 0 {
					dropped = fmt.Sprint(h.hostDropped)
				}
				b.res.notice("hand-off (%s, run %d): lost frames %s (%d of %d sent before the hand-off started; B's multilink dropped %s towards its host, which did not read in time); the hand-off started at %.0f ms, link 1 closed at %.0f ms",
					name, i+1, h.gaps, h.lostBefore, h.lost, dropped, h.startAt, h.closeAt)
			}
		}
	}
	return b.handoffNet()
}

func hoLabel(col string) string {
	switch col {
	case hoDedup:
		return "multifs (dedup on, the default)"
	case hoOff:
		return "multifs -o dedup=off"
	}
	return col
}

// hoKey is the prefix of a column's figure keys.
func hoKey(col string) string {
	if col == hoOff {
		return "handoff.off."
	}
	return "handoff."
}

// sumFigure shows the runs' total (a count that should be 0) and keeps
// each run's, on which a target is decided.
func (b *bench) sumFigure(section, key, label, unit string, p perSystem) *Figure {
	sum := func(v []float64) *float64 {
		if len(v) == 0 {
			return nil
		}
		s := 0.0
		for _, x := range v {
			s += x
		}
		return &s
	}
	if b.runs > 1 {
		label = fmt.Sprintf("%s, %d runs together", label, b.runs)
	}
	f := b.res.one(section, key, label, unit, sum(p["multifs"]), sum(p["reference"]))
	f.MultifsRuns, f.RefRuns = p["multifs"], p["reference"]
	return f
}

func (b *bench) handoffMultifs(col string, phase time.Duration, run int) (*handoffResult, error) {
	tag := fmt.Sprintf("ho%d-%s", run, map[string]string{hoDedup: "M", hoOff: "O"}[col])
	a, err := b.startMultifs(tag+"-A", hoMultifsArgs(col)...)
	if err != nil {
		return nil, err
	}
	defer a.stop()
	bb, err := b.startMultifs(tag+"-B", hoMultifsArgs(col)...)
	if err != nil {
		return nil, err
	}
	defer bb.stop()
	gen, err := client.Dial(filepath.Join(a.path, "host"), "bench hand-off generator")
	if err != nil {
		return nil, err
	}
	defer gen.Close()
	snk, err := client.Dial(filepath.Join(bb.path, "host"), "bench hand-off sink")
	if err != nil {
		return nil, err
	}
	defer snk.Close()
	var rec *hoRecorder
	if run == 0 && col == hoDedup {
		if rec, err = b.newHoRecorder(col, tag, bb.path, func() (uint64, error) { return statsValue(bb.path, "dup_dropped") }); err != nil {
			return nil, err
		}
		defer rec.close()
	}
	return b.runHandoff(phase, handoffSetup{
		gen: gen, sink: snk, rec: rec,
		link1: func() (*proc, error) { return b.spawnEnv(rec.env(1), tag+"-link1.log", b.vdePlug, a.path, bb.path) },
		handoff: func(*proc, <-chan time.Time) (*handoffDone, error) {
			// Link 1 is the first link either daemon saw.
			return b.multifsHandoff(a.path, bb.path, "1", tag+"-handoff.log", rec.env(2))
		},
		hostDropped: func() (uint64, error) { return statsValue(filepath.Join(bb.path, "host"), "tx_dropped") },
	})
}

func (b *bench) handoffRef(phase time.Duration, run int) (*handoffResult, error) {
	tag := fmt.Sprintf("ho%d-R", run)
	ra, err := b.startRef(tag + "-A")
	if err != nil {
		return nil, err
	}
	defer ra.proc.kill()
	rb, err := b.startRef(tag + "-B")
	if err != nil {
		return nil, err
	}
	defer rb.proc.kill()
	var rec *hoRecorder
	if run == 0 {
		if rec, err = b.newHoRecorder(hoRef, tag, rb.multi, nil); err != nil {
			return nil, err
		}
		defer rec.close()
	}
	return b.runHandoff(phase, handoffSetup{
		gen: ra.host, sink: rb.host, rec: rec,
		link1: func() (*proc, error) { return b.spawnEnv(rec.env(1), tag+"-link1.log", b.vdePlug, ra.multi, rb.multi) },
		handoff: func(link1 *proc, carried <-chan time.Time) (*handoffDone, error) {
			return b.refHandoff(ra.multi, rb.multi, link1, carried, tag+"-link2.log", rec.env(2))
		},
	})
}

// runHandoff drives one column: a phase on link 1, the hand-off, a phase
// on the new link.
func (b *bench) runHandoff(phase time.Duration, s handoffSetup) (*handoffResult, error) {
	link1, err := s.link1()
	if err != nil {
		return nil, err
	}
	defer link1.kill()
	if err := probe(s.gen, s.sink, 3*time.Second); err != nil {
		return nil, fmt.Errorf("link 1 carries no frame: %w", err)
	}
	dropped0, derr := uint64(0), error(nil)
	if s.hostDropped != nil {
		dropped0, derr = s.hostDropped()
	}
	stopBeacon := beacon(s.sink, s.gen, beaconEvery)
	defer stopBeacon()

	res := &handoffResult{hostDropped: -1}
	run := nextRun()
	dur := 2*phase + handoffBudget
	total := uint64(dur.Seconds() * handoffRate)
	carried := make(chan time.Time, 1) // the first duplicate at B
	start := time.Now()
	var bins *rxBins
	var sampled <-chan struct{}
	stopSampling := make(chan struct{})
	if s.rec != nil {
		bins = &rxBins{t0: now(), width: int64(hoBin)}
		sampled = s.rec.sample(start, stopSampling)
	}

	timeline := make(chan error, 1)
	go func() {
		time.Sleep(time.Until(start.Add(phase)))
		h, err := s.handoff(link1, carried)
		res.h = h
		timeline <- err
	}()

	g, rs, err := trial(
		func() genResult { return paced(s.gen, 64, run, handoffRate, dur) },
		[]func(<-chan uint64) sinkResult{func(sent <-chan uint64) sinkResult {
			return sink(s.sink, sinkOpts{run: run, seqs: total, onDup: func() { carried <- time.Now() }, bins: bins},
				sent, idleAfterGen, dur+10*time.Second)
		}},
		dur+15*time.Second)
	terr := <-timeline // bounded: each hand-off gives up within 20 s
	if s.rec != nil {
		close(stopSampling)
		<-sampled
	}
	if s.hostDropped != nil && derr == nil {
		if d, err := s.hostDropped(); err == nil {
			res.hostDropped = int64(d - dropped0)
		}
	}
	defer res.h.end()
	if err != nil {
		return nil, err
	}
	if terr != nil {
		return nil, terr
	}
	res.sent = g.sent
	res.lost, res.dups = rs[0].lostAndDups(g.sent)
	res.gaps = gaps(rs[0].seen[:g.sent], handoffRate)
	res.startAt, res.closeAt = ms(res.h.startAt.Sub(start)), ms(res.h.endAt.Sub(start))
	for _, n := range rs[0].seen[:min(g.sent, uint64(res.startAt*handoffRate/1000))] {
		if n == 0 {
			res.lostBefore++
		}
	}
	res.late = res.h.endAt.After(start.Add(dur))
	if s.rec != nil {
		b.picture.keep(s.rec.trace, bins, res.startAt, res.closeAt, ms(dur))
	}
	return res, nil
}

// beacon sends a frame from far (host B) every interval until stopped, and
// discards what reaches near (host A, the generator): multifs handoff
// waits for its new link to receive a frame from the far side.
func beacon(far, near *client.Client, interval time.Duration) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		f := newFrame(64)
		stamp(f, nextRun(), 0)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				far.TrySend(f)
			}
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		bufs := make([][]byte, sinkBatch)
		for i := range bufs {
			bufs[i] = make([]byte, 9300)
		}
		sizes := make([]int, sinkBatch)
		for {
			select {
			case <-quit:
				return
			default:
			}
			near.RecvBatch(bufs, sizes, 20*time.Millisecond)
		}
	}()
	return func() {
		close(quit)
		<-done
		<-done
	}
}

// gaps describes the runs of lost sequence numbers and when they were
// sent (ms after the first frame), at most five of them.
func gaps(seen []uint8, rate int) string {
	var out []string
	n := 0
	for i := 0; i < len(seen); i++ {
		if seen[i] != 0 {
			continue
		}
		j := i
		for j < len(seen) && seen[j] == 0 {
			j++
		}
		n++
		if len(out) < 5 {
			out = append(out, fmt.Sprintf("%d-%d (%.0f-%.0f ms)", i, j-1,
				float64(i)*1000/float64(rate), float64(j)*1000/float64(rate)))
		}
		i = j
	}
	if n > len(out) {
		out = append(out, fmt.Sprintf("and %d more ranges", n-len(out)))
	}
	return strings.Join(out, ", ")
}

// probe sends marked frames from gen until sink receives one.
func probe(gen, sink *client.Client, limit time.Duration) error {
	run := nextRun()
	f := newFrame(64)
	buf := make([]byte, 9300)
	deadline := time.Now().Add(limit)
	for seq := uint64(0); time.Now().Before(deadline); seq++ {
		stamp(f, run, seq)
		if err := gen.TrySend(f); err != nil && seq == 0 {
			return err
		}
		for {
			n, err := sink.Recv(buf, 5*time.Millisecond)
			if err != nil {
				break
			}
			if r, _, _, ok := parseFrame(buf[:min(n, len(buf))]); ok && r == run {
				// Let the rest of the probe frames drain.
				drain(sink, 50*time.Millisecond)
				return nil
			}
		}
	}
	return fmt.Errorf("nothing arrived within %v", limit)
}

// drain discards what arrives on c until it has been quiet for quiet.
func drain(c *client.Client, quiet time.Duration) {
	buf := make([]byte, 9300)
	for {
		if _, err := c.Recv(buf, quiet); err != nil {
			return
		}
	}
}
