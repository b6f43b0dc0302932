package main

// Scenario 8: the hand-off. Numbered frames flow host A → host B at a
// steady rate over link 1 (`vde_plug A B`); after one phase link 2
// (`vde_plug A = vde_plug B`) joins, so B's host sees duplicates; after
// another phase link 1 is closed; a third phase runs on link 2 alone.
// Frames lost should be 0.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"multifs/control/client"
)

const handoffRate = 10000

// handoffSetup is one column's hand-off: its two hosts and how to make and
// close its links.
type handoffSetup struct {
	gen, sink  *client.Client
	start      func(link int) (*proc, error)
	closeLink1 func(link1 *proc) error
}

type handoffResult struct {
	sent, lost, dups uint64
	gaps             string  // where the lost frames were, for the notices
	link2At, closeAt float64 // ms after the first frame: link 2 started, link 1 closed
	link2Carrying    float64 // ms from starting link 2 to the first duplicate; < 0: never
	closeTook        float64 // ms the close took (write returned / process reaped)
	link1Exited      bool    // link 1's vde_plug ended after the close
	link2Late        bool    // link 2 carried no frame before link 1 was closed
}

func (b *bench) handoff() error {
	if b.vdePlug == "" {
		b.res.notice("vde_plug not found: scenario 8, the hand-off (whose links are vde_plug), skipped")
		return nil
	}
	phase, runs := 500*time.Millisecond, b.runs
	if b.quick {
		phase = 250 * time.Millisecond
	}
	section := fmt.Sprintf("8. hand-off, %s frames/s host A → host B, %v per phase", thousands(handoffRate), phase)

	results := map[string][]*handoffResult{}
	for run := 0; run < runs; run++ {
		m, err := b.handoffMultifs(phase, run)
		if err != nil {
			return fmt.Errorf("multifs: %w", err)
		}
		results["multifs"] = append(results["multifs"], m)
		r, err := b.handoffRef(phase, run)
		if err != nil {
			return fmt.Errorf("reference: %w", err)
		}
		results["reference"] = append(results["reference"], r)
	}
	b.res.notice("hand-off: the reference has no close file; its link 1 is ended by SIGTERM to that vde_plug")
	// Every run's figure per column; the losses are added up, the rest
	// are medians.
	each := func(f func(*handoffResult) float64) perSystem {
		p := perSystem{}
		for name, hs := range results {
			for _, h := range hs {
				p[name] = append(p[name], f(h))
			}
		}
		return p
	}
	lost := each(func(h *handoffResult) float64 { return float64(h.lost) })
	var mLost, rLost *float64
	for name, v := range lost {
		sum := 0.0
		for _, x := range v {
			sum += x
		}
		if name == "multifs" {
			mLost = &sum
		} else {
			rLost = &sum
		}
	}
	label := "frames lost"
	if runs > 1 {
		label = fmt.Sprintf("frames lost, %d runs together", runs)
	}
	f := b.res.one(section, "handoff.lost", label, "frames", mLost, rLost)
	f.MultifsRuns, f.RefRuns = lost["multifs"], lost["reference"]
	b.addFigure(section, "handoff.dups", "duplicates seen", "frames", each(func(h *handoffResult) float64 { return float64(h.dups) }))
	b.addFigure(section, "handoff.sent", "frames sent", "frames", each(func(h *handoffResult) float64 { return float64(h.sent) }))
	f = b.addFigure(section, "handoff.link2_ms", "link 2 started → first duplicate", "ms", each(func(h *handoffResult) float64 { return h.link2Carrying }))
	f.Note = "-1 = never"
	f = b.addFigure(section, "handoff.close_ms", "closing link 1 took", "ms", each(func(h *handoffResult) float64 { return h.closeTook }))
	f.Note = "reference: kill + reap"
	for _, name := range []string{"multifs", "reference"} {
		for i, h := range results[name] {
			if h.link2Late {
				b.res.notice("hand-off (%s, run %d): link 2 carried no frame by the time link 1 was closed", name, i+1)
			}
			if !h.link1Exited {
				b.res.notice("hand-off (%s, run %d): link 1's vde_plug was still running 1 s after the close", name, i+1)
			}
			if h.lost > 0 {
				b.res.notice("hand-off (%s, run %d): lost frames %s; link 2 started at %.0f ms, link 1 closed at %.0f ms",
					name, i+1, h.gaps, h.link2At, h.closeAt)
			}
		}
	}
	return nil
}

func (b *bench) handoffMultifs(phase time.Duration, run int) (*handoffResult, error) {
	a, err := b.startMultifs(fmt.Sprintf("ho%d-A", run))
	if err != nil {
		return nil, err
	}
	defer a.stop()
	bb, err := b.startMultifs(fmt.Sprintf("ho%d-B", run))
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
	return b.runHandoff(phase, handoffSetup{
		gen: gen, sink: snk,
		start: func(link int) (*proc, error) {
			// As for the reference, the data tell when a link works: the
			// probe for link 1, the first duplicate for link 2.
			if link == 1 {
				return b.spawn(fmt.Sprintf("ho%d-M-link1.log", run), b.vdePlug, a.path, bb.path)
			}
			return b.spawn(fmt.Sprintf("ho%d-M-link2.log", run), b.vdePlug, a.path, "=", b.vdePlug, bb.path)
		},
		closeLink1: func(*proc) error {
			// Link 1 is the first link either daemon saw.
			return os.WriteFile(filepath.Join(a.path, "links", "1", "close"), []byte("1\n"), 0)
		},
	})
}

func (b *bench) handoffRef(phase time.Duration, run int) (*handoffResult, error) {
	ra, err := b.startRef(fmt.Sprintf("ho%d-refA", run))
	if err != nil {
		return nil, err
	}
	defer ra.proc.kill()
	rb, err := b.startRef(fmt.Sprintf("ho%d-refB", run))
	if err != nil {
		return nil, err
	}
	defer rb.proc.kill()
	return b.runHandoff(phase, handoffSetup{
		gen: ra.host, sink: rb.host,
		start: func(link int) (*proc, error) {
			if link == 1 {
				return b.spawn(fmt.Sprintf("ho%d-R-link1.log", run), b.vdePlug, ra.multi, rb.multi)
			}
			return b.spawn(fmt.Sprintf("ho%d-R-link2.log", run), b.vdePlug, ra.multi, "=", b.vdePlug, rb.multi)
		},
		closeLink1: func(p *proc) error {
			p.kill()
			return nil
		},
	})
}

// runHandoff drives one column through the three phases.
func (b *bench) runHandoff(phase time.Duration, h handoffSetup) (*handoffResult, error) {
	link1, err := h.start(1)
	if err != nil {
		return nil, err
	}
	defer link1.kill()
	if err := probe(h.gen, h.sink, 3*time.Second); err != nil {
		return nil, fmt.Errorf("link 1 carries no frame: %w", err)
	}

	res := &handoffResult{link2Carrying: -1}
	run := nextRun()
	total := uint64(3 * phase.Seconds() * handoffRate)
	dup := make(chan struct{}) // closed at the first duplicate, at dupAt
	var dupAt time.Time
	start := time.Now()

	// The timeline runs beside the generator and the sink.
	timeline := make(chan error, 1)
	var link2 *proc
	go func() {
		time.Sleep(time.Until(start.Add(phase)))
		t2 := time.Now()
		res.link2At = ms(t2.Sub(start))
		p, err := h.start(2)
		link2 = p
		if err != nil {
			timeline <- err
			return
		}
		time.Sleep(time.Until(start.Add(2 * phase)))
		select {
		case <-dup:
			res.link2Carrying = float64(dupAt.Sub(t2).Microseconds()) / 1e3
		default:
			res.link2Late = true
		}
		tc := time.Now()
		res.closeAt = ms(tc.Sub(start))
		err = h.closeLink1(link1)
		res.closeTook = float64(time.Since(tc).Microseconds()) / 1e3
		if err != nil {
			timeline <- fmt.Errorf("closing link 1: %w", err)
			return
		}
		select {
		case <-link1.done:
			res.link1Exited = true
		case <-time.After(time.Second):
		}
		timeline <- nil
	}()

	g, rs, err := trial(
		func() genResult { return paced(h.gen, 64, run, handoffRate, 3*phase) },
		[]func(<-chan uint64) sinkResult{func(sent <-chan uint64) sinkResult {
			return sink(h.sink, sinkOpts{run: run, seqs: total, onDup: func() { dupAt = time.Now(); close(dup) }},
				sent, idleAfterGen, 3*phase+10*time.Second)
		}},
		3*phase+15*time.Second)
	terr := <-timeline
	if link2 != nil {
		defer link2.kill()
	}
	if err != nil {
		return nil, err
	}
	if terr != nil {
		return nil, terr
	}
	res.sent = g.sent
	res.lost, res.dups = rs[0].lostAndDups(g.sent)
	res.gaps = gaps(rs[0].seen[:g.sent], handoffRate)
	return res, nil
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
