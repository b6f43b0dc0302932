package main

// Scenario 8's iperf3 rows: a hand-off in the middle of TCP and of UDP
// traffic between two network namespaces of our own, through taps the
// multilinks own (as in scenario 11: multifs --host tap://, vde_plug
// multi:// tap://), 169.254.78.1 → .2, in the three columns of the
// frame-level rows (multifs with dedup, with -o dedup=off on both
// multilinks, the reference). Each column's path is made once; each run
// hands its current link over (handover.go) hoAt into the traffic:
//
//   - TCP: iperf3 -t S -i 0.5 --json from A to B. Each 0.5 s interval is
//     before the hand-off (it ended hoSlack before the hand-off started,
//     by our clock from the client's start, which iperf3's own clock
//     trails by the few ms it takes to connect), after it (it started
//     once link 1 was closed), or during it (the rest); their mean
//     throughputs, and the sender's retransmits over the run and in the
//     intervals during the hand-off.
//   - UDP: 64-byte datagrams at 10,000/s from a socket in A to one in B
//     (udpseq.go; iperf3's UDP report counts duplicates nowhere), each
//     numbered: datagrams lost and received twice.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const (
	hoAt      = 1100 * time.Millisecond // the hand-off starts this long into a run
	hoSlack   = 0.1                     // s: how far iperf3's intervals may trail our clock
	hoUDPRate = 10000
	hoUDPPort = 5301
)

// hoNetCol is one column's results, run by run.
type hoNetCol struct {
	before, during, after, retr, retrDuring []float64
	udpSent, udpLost, udpDups               []float64
}

func (b *bench) handoffNet() error {
	for _, need := range []string{"iperf3", "ip"} {
		if _, err := exec.LookPath(need); err != nil {
			b.res.notice("%s not found: scenario 8's iperf3 rows (a hand-off under TCP and UDP) skipped", need)
			return nil
		}
	}
	if os.Geteuid() != 0 {
		b.res.notice("not root: scenario 8's iperf3 rows (namespaces, taps) skipped")
		return nil
	}
	secs := 4
	if b.quick {
		secs = 3
	}
	tag := fmt.Sprintf("%d", os.Getpid()%100000)
	nsA, nsB, err := b.netnsPair("mfho-" + tag)
	if err != nil {
		return err
	}
	res := map[string]*hoNetCol{}
	for _, col := range hoColumns {
		name := map[string]string{hoDedup: "hoNetM", hoOff: "hoNetO", hoRef: "hoNet"}[col]
		sides := tapSides{name: name, nsA: nsA, nsB: nsB, tapA: "mfhA" + tag, tapB: "mfhB" + tag, addrA: "169.254.78.1/24", addrB: "169.254.78.2/24"}
		r, err := b.handoffNetColumn(col, sides, secs)
		if err != nil {
			return fmt.Errorf("%s: %w", col, err)
		}
		res[col] = r
	}
	for _, col := range []string{hoDedup, hoOff} {
		section := fmt.Sprintf("8b. hand-off at %v of iperf3 -t %d -i 0.5 (TCP) and of 64 B UDP at %s/s, netns to netns through taps: %s beside the reference",
			hoAt, secs, thousands(hoUDPRate), hoLabel(col))
		key := hoKey(col)
		m, r := res[col], res[hoRef]
		pair := func(f func(*hoNetCol) []float64) perSystem {
			return perSystem{"multifs": f(m), "reference": f(r)}
		}
		b.addFigure(section, key+"tcp.before", "TCP before the hand-off", "Mbit/s", pair(func(c *hoNetCol) []float64 { return c.before }))
		b.addFigure(section, key+"tcp.during", "TCP during the hand-off", "Mbit/s", pair(func(c *hoNetCol) []float64 { return c.during }))
		b.addFigure(section, key+"tcp.after", "TCP after the hand-off", "Mbit/s", pair(func(c *hoNetCol) []float64 { return c.after }))
		b.addFigure(section, key+"tcp.retransmits", "TCP retransmits", "count", pair(func(c *hoNetCol) []float64 { return c.retr }))
		b.addFigure(section, key+"tcp.retransmits_during", "TCP retransmits during the hand-off", "count", pair(func(c *hoNetCol) []float64 { return c.retrDuring }))
		b.addFigure(section, key+"udp.sent", "UDP datagrams sent", "count", pair(func(c *hoNetCol) []float64 { return c.udpSent }))
		b.sumFigure(section, key+"udp.lost", "UDP datagrams lost", "count", pair(func(c *hoNetCol) []float64 { return c.udpLost }))
		b.sumFigure(section, key+"udp.dups", "UDP datagrams received twice", "count", pair(func(c *hoNetCol) []float64 { return c.udpDups }))
	}
	return nil
}

// handoffNetColumn makes one column's path and iperf3 server and measures
// its runs, each handing the link in use over to a new one.
func (b *bench) handoffNetColumn(col string, s tapSides, secs int) (*hoNetCol, error) {
	var tn *tapNet
	var err error
	if col == hoRef {
		tn, err = b.tapNetRef(s)
	} else {
		tn, err = b.tapNetMultifs(s, hoMultifsArgs(col)...)
	}
	defer tn.stop()
	if err != nil {
		return nil, err
	}
	var handed []*handover
	defer func() {
		for _, h := range handed {
			h.end()
		}
	}()
	// The link in use: multifs names it by id, the reference by process.
	old, link := "1", tn.link
	n := 0
	handOver := func() (*handover, error) {
		n++
		log := fmt.Sprintf("%s-handoff%d.log", s.name, n)
		var h *handover
		var err error
		if col == hoRef {
			h, err = b.refHandoff(tn.a, tn.b, link, nil, log)
		} else {
			h, err = b.multifsHandoff(tn.a, tn.b, old, log)
		}
		if err != nil {
			return nil, err
		}
		handed = append(handed, h)
		old, link = h.newLink, h.ref
		return h, nil
	}
	// at runs f (a client of d seconds) with a hand-off hoAt into it.
	at := func(f func() error) (time.Time, *handover, error) {
		t0 := time.Now()
		hc := make(chan error, 1)
		var h *handover
		go func() {
			time.Sleep(time.Until(t0.Add(hoAt)))
			var err error
			h, err = handOver()
			hc <- err
		}()
		err := f()
		if herr := <-hc; herr != nil {
			return t0, nil, fmt.Errorf("hand-off: %w", herr)
		}
		return t0, h, err
	}

	srvLog := s.name + "-iperf3-server.log"
	srv, err := b.spawn(srvLog, "ip", "netns", "exec", s.nsB, "iperf3", "-s", "-B", s.ipB())
	if err != nil {
		return nil, err
	}
	defer srv.kill()
	if err := waitListening(s.nsB, "5201"); err != nil {
		return nil, fmt.Errorf("iperf3 server: %w", err)
	}
	out := &hoNetCol{}
	for run := 0; run < b.runs; run++ {
		var r iperfIntervals
		t0, h, err := at(func() error { return iperfClient(s.nsA, s.ipB(), secs, &r, "-i", "0.5") })
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(b.tmp, srvLog))
			return nil, fmt.Errorf("TCP run %d: %w (server: %q)", run+1, err, strings.TrimSpace(string(log)))
		}
		p := r.phases(h.startAt.Sub(t0).Seconds(), h.endAt.Sub(t0).Seconds())
		if p.nBefore == 0 || p.nDuring == 0 || p.nAfter == 0 {
			return nil, fmt.Errorf("TCP run %d: intervals before/during/after the hand-off: %d/%d/%d (hand-off %.0f-%.0f ms into %d s)",
				run+1, p.nBefore, p.nDuring, p.nAfter, ms(h.startAt.Sub(t0)), ms(h.endAt.Sub(t0)), secs)
		}
		out.before = append(out.before, p.before/1e6)
		out.during = append(out.during, p.during/1e6)
		out.after = append(out.after, p.after/1e6)
		out.retr = append(out.retr, r.End.SumSent.Retransmits)
		out.retrDuring = append(out.retrDuring, p.retrDuring)

		var u udpResult
		_, _, err = at(func() error {
			var err error
			u, err = udpSeqRun(s.nsA, s.nsB, s.ipB(), hoUDPPort, hoUDPRate, time.Duration(secs)*time.Second)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("UDP run %d: %w", run+1, err)
		}
		out.udpSent = append(out.udpSent, float64(u.sent))
		out.udpLost = append(out.udpLost, float64(u.lost))
		out.udpDups = append(out.udpDups, float64(u.dups))
	}
	return out, nil
}

// iperfIntervals is what the hand-off rows read of iperf3's JSON report.
type iperfIntervals struct {
	Intervals []struct {
		Sum struct {
			Start         float64 `json:"start"`
			End           float64 `json:"end"`
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   float64 `json:"retransmits"`
		} `json:"sum"`
	} `json:"intervals"`
	End struct {
		SumSent struct {
			Retransmits float64 `json:"retransmits"`
		} `json:"sum_sent"`
	} `json:"end"`
}

// hoPhases are the mean throughputs (bit/s) of the intervals before,
// during and after a hand-off, how many intervals each had, and the
// retransmits of those during it.
type hoPhases struct {
	before, during, after    float64
	nBefore, nDuring, nAfter int
	retrDuring               float64
}

// phases sorts the intervals by the hand-off's start and end (s after the
// client started, by our clock).
func (r *iperfIntervals) phases(start, end float64) hoPhases {
	var p hoPhases
	for _, iv := range r.Intervals {
		s := iv.Sum
		switch {
		case s.End+hoSlack <= start:
			p.before += s.BitsPerSecond
			p.nBefore++
		case s.Start >= end:
			p.after += s.BitsPerSecond
			p.nAfter++
		default:
			p.during += s.BitsPerSecond
			p.nDuring++
			p.retrDuring += s.Retransmits
		}
	}
	mean := func(sum float64, n int) float64 {
		if n == 0 {
			return 0
		}
		return sum / float64(n)
	}
	p.before, p.during, p.after = mean(p.before, p.nBefore), mean(p.during, p.nDuring), mean(p.after, p.nAfter)
	return p
}
