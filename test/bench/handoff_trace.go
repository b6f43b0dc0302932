package main

// What the hand-off's picture (handoff_plot.go) needs, recorded during the
// first run of scenario 8's multifs (dedup on) and reference columns,
// beside the rows and without changing what they measure:
//
//   - the frames each link's vde_plug gave host B's multilink, read every
//     hoBin from a counter that the sendcount shim (cclient/sendcount.c,
//     LD_PRELOAD into the links' vde_plugs) keeps in a file of ours;
//   - B's dup_dropped (multifs only: the reference suppresses nothing),
//     read from B's stats file at the same times;
//   - host B's receipts of numbered frames, first copies and duplicates,
//     counted by the sink per hoBin (rxBins);
//   - the iperf3 run's 0.5 s intervals and the hand-off's times (TCP).

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// hoBin is the picture's time resolution: at 10,000 frames/s, 500 frames
// a bin; B's stats file is read 20 times a second.
const hoBin = 50 * time.Millisecond

// hoTrace is one column's frame-level run, as recorded.
type hoTrace struct {
	col     string
	binMs   float64
	at      []float64   // ms after the generator started: when each sample was taken
	link    [2][]uint64 // per sample: frames link 1 and link 2 had given B's multilink; nil: not counted
	dropped []uint64    // per sample: B's dup_dropped; nil: none (the reference)
	// per bin of binMs from the generator's start: host B's first and
	// later receipts of a numbered frame
	first, again       []uint64
	startMs, endMs     float64 // the hand-off started; link 1 was closed
	rate               int     // frames/s sent
	durMs              float64 // how long the generator sent
	linkCountsMissing  string  // why link is nil, for the caption
	droppedReadFailure error   // a failed read of B's stats (the series stops there)
}

// hoTCPTrace is one column's first iperf3 run under a hand-off.
type hoTCPTrace struct {
	col            string
	start, end     []float64 // each interval, s after the client started (iperf3's clock)
	mbps           []float64
	startS, endS   float64 // the hand-off started; link 1 was closed (our clock)
	secs           int
	retransmits    float64
	retransmitsDur float64
}

// hoPicture collects the traces of one bench run.
type hoPicture struct {
	mu     sync.Mutex
	frames map[string]*hoTrace
	tcp    map[string]*hoTCPTrace
}

// rxBins counts receipts by time: bin i holds those at t0 + i*width ..
// t0 + (i+1)*width (times as now() gives them).
type rxBins struct {
	t0, width    int64
	first, again []uint64
}

// maxBins bounds what a late frame can make a bin slice grow to (a minute
// of 25 ms bins).
const maxBins = 2400

func (b *rxBins) add(t int64, again bool) {
	if t < b.t0 || b.width <= 0 {
		return
	}
	i := int((t - b.t0) / b.width)
	if i >= maxBins {
		return
	}
	for len(b.first) <= i {
		b.first = append(b.first, 0)
		b.again = append(b.again, 0)
	}
	if again {
		b.again[i]++
	} else {
		b.first[i]++
	}
}

// buildSendCount compiles the counting shim into the scratch directory;
// "" (and a notice) when it does not build: the picture then lacks the
// per-link series.
func (b *bench) buildSendCount() string {
	src := filepath.Join(b.root, "test", "bench", "cclient", "sendcount.c")
	out := filepath.Join(b.tmp, "sendcount.so")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	msg, err := exec.CommandContext(ctx, "gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", out, src, "-ldl").CombinedOutput()
	if err != nil {
		b.res.notice("the hand-off picture's per-link counter (sendcount.c) did not build (apt-get install gcc): %v: %s",
			err, strings.TrimSpace(string(msg)))
		return ""
	}
	return out
}

// hoRecorder records one column's run for the picture.
type hoRecorder struct {
	shim  string
	peer  string // the far multilink's path, as the links' vde_plug is given it
	files [2]*os.File
	// dupDropped reads B's dup_dropped; nil for the reference.
	dupDropped func() (uint64, error)
	trace      *hoTrace
}

// newHoRecorder makes the counter files of links 1 and 2. peer is host B's
// multilink as the links' vde_plug names it (multifs: its mount; the
// reference: its multi:// directory).
func (b *bench) newHoRecorder(col, tag, peer string, dupDropped func() (uint64, error)) (*hoRecorder, error) {
	r := &hoRecorder{peer: peer, dupDropped: dupDropped,
		trace: &hoTrace{col: col, binMs: ms(hoBin), rate: handoffRate}}
	if b.sendCount == "" {
		r.trace.linkCountsMissing = "the counting shim did not build"
		return r, nil
	}
	r.shim = b.sendCount
	for i := range r.files {
		f, err := os.OpenFile(filepath.Join(b.tmp, fmt.Sprintf("%s-link%d.count", tag, i+1)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			r.close()
			return nil, err
		}
		r.files[i] = f
		if _, err := f.Write(make([]byte, 8)); err != nil {
			r.close()
			return nil, err
		}
	}
	return r, nil
}

func (r *hoRecorder) close() {
	if r == nil {
		return
	}
	for _, f := range r.files {
		if f != nil {
			f.Close()
		}
	}
}

// env is the environment of link n's vde_plug (1 or 2): ours, and the
// shim; nil (inherit ours) when not counting.
func (r *hoRecorder) env(n int) []string {
	if r == nil || r.shim == "" {
		return nil
	}
	return append(os.Environ(), "LD_PRELOAD="+r.shim, "MFBENCH_COUNT="+r.files[n-1].Name(), "MFBENCH_PEER="+r.peer)
}

// count reads link n's counter (index 0 or 1).
func (r *hoRecorder) count(i int) uint64 {
	var buf [8]byte
	if _, err := r.files[i].ReadAt(buf[:], 0); err != nil {
		return 0
	}
	return binary.NativeEndian.Uint64(buf[:])
}

// sample reads the counters every hoBin from start until stop is closed.
// The caller waits on the returned done before it reads the trace.
func (r *hoRecorder) sample(start time.Time, stop <-chan struct{}) (done <-chan struct{}) {
	d := make(chan struct{})
	tr := r.trace
	counting := r.shim != ""
	if r.dupDropped != nil {
		tr.dropped = []uint64{}
	}
	take := func() {
		at := ms(time.Since(start))
		if counting {
			tr.link[0] = append(tr.link[0], r.count(0))
			tr.link[1] = append(tr.link[1], r.count(1))
		}
		if r.dupDropped != nil && tr.droppedReadFailure == nil {
			v, err := r.dupDropped()
			if err != nil {
				tr.droppedReadFailure = err
			} else {
				tr.dropped = append(tr.dropped, v)
			}
		}
		tr.at = append(tr.at, at)
	}
	go func() {
		defer close(d)
		t := time.NewTicker(hoBin)
		defer t.Stop()
		take()
		for n := 0; n < maxBins; n++ {
			select {
			case <-stop:
				take()
				return
			case <-t.C:
				take()
			}
		}
	}()
	return d
}

// keep files the trace of a finished run (the sink's bins and the
// hand-off's times).
func (p *hoPicture) keep(tr *hoTrace, bins *rxBins, startMs, endMs, durMs float64) {
	tr.first, tr.again = bins.first, bins.again
	tr.startMs, tr.endMs, tr.durMs = startMs, endMs, durMs
	if tr.link[0] == nil && tr.linkCountsMissing == "" {
		tr.linkCountsMissing = "not counted"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frames == nil {
		p.frames = map[string]*hoTrace{}
	}
	p.frames[tr.col] = tr
}

// keepTCP files a column's first iperf3 run under a hand-off.
func (p *hoPicture) keepTCP(col string, secs int, r *iperfIntervals, startS, endS, retrDuring float64) {
	t := &hoTCPTrace{col: col, startS: startS, endS: endS, secs: secs,
		retransmits: r.End.SumSent.Retransmits, retransmitsDur: retrDuring}
	for _, iv := range r.Intervals {
		t.start = append(t.start, iv.Sum.Start)
		t.end = append(t.end, iv.Sum.End)
		t.mbps = append(t.mbps, iv.Sum.BitsPerSecond/1e6)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tcp == nil {
		p.tcp = map[string]*hoTCPTrace{}
	}
	p.tcp[col] = t
}
