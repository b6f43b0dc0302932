package main

// Scenario 8's iperf3 rows: a hand-off in the middle of TCP and of UDP
// traffic between two network namespaces of our own, through taps the
// multilinks own (as in scenario 11: multifs --host tap://, vde_plug
// multi:// tap://), 169.254.78.1 → .2, in the three columns of the
// frame-level rows (multifs with dedup, with -o dedup=off on both
// multilinks, the reference). Each column's path, in a pair of namespaces
// of its own, is made once; round i measures the three one after the
// other, and each measurement hands the path's link in use over to a new
// one (handoff_exec.go) hoAt into the traffic:
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
	// Each column has a pair of namespaces of its own, so that the three
	// paths stand side by side and round i measures them one after the
	// other, as everywhere else in the table.
	tag := fmt.Sprintf("%d", os.Getpid()%100000)
	paths := map[string]*hoNetPath{}
	defer func() {
		for _, p := range paths {
			p.close()
		}
	}()
	for _, col := range hoColumns {
		letter := map[string]string{hoDedup: "M", hoOff: "O", hoRef: "R"}[col]
		nsA, nsB, err := b.netnsPair("mfho-" + tag + "-" + letter)
		if err != nil {
			return err
		}
		s := tapSides{name: "hoNet" + letter, nsA: nsA, nsB: nsB, tapA: "mfhA" + letter + tag, tapB: "mfhB" + letter + tag,
			addrA: "169.254.78.1/24", addrB: "169.254.78.2/24"}
		p, err := b.newHoNetPath(col, s)
		if p != nil {
			paths[col] = p
		}
		if err != nil {
			return fmt.Errorf("%s: %w", col, err)
		}
	}
	res := map[string]*hoNetCol{}
	for _, col := range hoColumns {
		res[col] = &hoNetCol{}
	}
	for run := 0; run < b.runs; run++ {
		for _, col := range hoColumns {
			if err := paths[col].measure(secs, res[col]); err != nil {
				return fmt.Errorf("%s, run %d: %w", col, run+1, err)
			}
		}
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

// hoNetPath is one column's path between its namespaces, its iperf3
// server, and the link in use, which each measurement hands over to a
// new one.
type hoNetPath struct {
	b      *bench
	col    string
	s      tapSides
	tn     *tapNet
	srv    *proc
	srvLog string
	old    string // multifs: the id of the link in use
	link   *proc  // the reference: the link in use
	handed []*handoffDone
}

// newHoNetPath makes the path and starts the iperf3 server. On an error
// the path returned, if any, is to be closed.
func (b *bench) newHoNetPath(col string, s tapSides) (*hoNetPath, error) {
	p := &hoNetPath{b: b, col: col, s: s, old: "1", srvLog: s.name + "-iperf3-server.log"}
	var err error
	if col == hoRef {
		p.tn, err = b.tapNetRef(s)
	} else {
		p.tn, err = b.tapNetMultifs(s, hoMultifsArgs(col)...)
	}
	p.link = p.tn.link
	if err != nil {
		return p, err
	}
	if p.srv, err = b.spawn(p.srvLog, "ip", "netns", "exec", s.nsB, "iperf3", "-s", "-B", s.ipB()); err != nil {
		return p, err
	}
	if err := waitListening(s.nsB, "5201"); err != nil {
		return p, fmt.Errorf("iperf3 server: %w", err)
	}
	return p, nil
}

func (p *hoNetPath) close() {
	if p.srv != nil {
		p.srv.kill()
	}
	for _, h := range p.handed {
		h.end()
	}
	p.tn.stop()
}

// handOff hands the link in use off to a new one.
func (p *hoNetPath) handOff() (*handoffDone, error) {
	log := fmt.Sprintf("%s-handoff%d.log", p.s.name, len(p.handed)+1)
	var h *handoffDone
	var err error
	if p.col == hoRef {
		h, err = p.b.refHandoff(p.tn.a, p.tn.b, p.link, nil, log, nil)
	} else {
		h, err = p.b.multifsHandoff(p.tn.a, p.tn.b, p.old, log, nil)
	}
	if err != nil {
		return nil, err
	}
	p.handed = append(p.handed, h)
	p.old, p.link = h.newLink, h.ref
	return h, nil
}

// during runs f (a client) with a hand-off hoAt after its start, and
// returns that start and the hand-off.
func (p *hoNetPath) during(f func() error) (time.Time, *handoffDone, error) {
	t0 := time.Now()
	hc := make(chan error, 1)
	var h *handoffDone
	go func() {
		time.Sleep(time.Until(t0.Add(hoAt)))
		var err error
		h, err = p.handOff()
		hc <- err
	}()
	err := f()
	if herr := <-hc; herr != nil { // bounded: a hand-off gives up within 20 s
		return t0, nil, fmt.Errorf("hand-off: %w", herr)
	}
	return t0, h, err
}

// measure is one run: a hand-off under TCP, then one under UDP.
func (p *hoNetPath) measure(secs int, out *hoNetCol) error {
	var r iperfIntervals
	t0, h, err := p.during(func() error { return iperfClient(p.s.nsA, p.s.ipB(), secs, &r, "-i", "0.5") })
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(p.b.tmp, p.srvLog))
		return fmt.Errorf("TCP: %w (server: %q)", err, strings.TrimSpace(string(log)))
	}
	ph := r.phases(h.startAt.Sub(t0).Seconds(), h.endAt.Sub(t0).Seconds())
	if ph.nBefore == 0 || ph.nDuring == 0 || ph.nAfter == 0 {
		return fmt.Errorf("TCP: intervals before/during/after the hand-off: %d/%d/%d (hand-off %.0f-%.0f ms into %d s)",
			ph.nBefore, ph.nDuring, ph.nAfter, ms(h.startAt.Sub(t0)), ms(h.endAt.Sub(t0)), secs)
	}
	out.before = append(out.before, ph.before/1e6)
	out.during = append(out.during, ph.during/1e6)
	out.after = append(out.after, ph.after/1e6)
	out.retr = append(out.retr, r.End.SumSent.Retransmits)
	out.retrDuring = append(out.retrDuring, ph.retrDuring)
	if len(out.before) == 1 && (p.col == hoDedup || p.col == hoRef) {
		p.b.picture.keepTCP(p.col, secs, &r, h.startAt.Sub(t0).Seconds(), h.endAt.Sub(t0).Seconds(), ph.retrDuring)
	}

	var u udpResult
	_, _, err = p.during(func() error {
		var err error
		u, err = udpSeqRun(p.s.nsA, p.s.nsB, p.s.ipB(), hoUDPPort, hoUDPRate, time.Duration(secs)*time.Second)
		return err
	})
	if err != nil {
		return fmt.Errorf("UDP: %w", err)
	}
	out.udpSent = append(out.udpSent, float64(u.sent))
	out.udpLost = append(out.udpLost, float64(u.lost))
	out.udpDups = append(out.udpDups, float64(u.dups))
	return nil
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
