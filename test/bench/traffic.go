package main

// The generator and the sink, identical for both columns. A test frame is
// a broadcast Ethernet header with a local experimental EtherType, then
//
//	magic "mfbn" | run id (u32) | sequence number (u64) | send time (i64 ns)
//
// The run id lets a sink ignore stragglers of an earlier run; the send time
// is read from the bench process's monotonic clock (time.Since(epoch)).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"multifs/control/client"
)

const (
	etherType = 0x88b5
	hdrLen    = 14
	payOff    = hdrLen
	minFrame  = hdrLen + 4 + 4 + 8 + 8
)

var (
	magic = [4]byte{'m', 'f', 'b', 'n'}
	epoch = time.Now()
	runID atomic.Uint32
)

func now() int64 { return int64(time.Since(epoch)) }

func nextRun() uint32 { return runID.Add(1) }

// newFrame returns a test frame of size bytes with the header filled in.
func newFrame(size int) []byte {
	if size < minFrame {
		size = minFrame
	}
	f := make([]byte, size)
	for i := 0; i < 6; i++ {
		f[i] = 0xff
	}
	copy(f[6:12], []byte{0x02, 0, 0, 0x6d, 0x66, 0x62})
	binary.BigEndian.PutUint16(f[12:], etherType)
	copy(f[payOff:], magic[:])
	for i := minFrame; i < size; i++ {
		f[i] = byte(i)
	}
	return f
}

func stamp(f []byte, run uint32, seq uint64) {
	binary.BigEndian.PutUint32(f[payOff+4:], run)
	binary.BigEndian.PutUint64(f[payOff+8:], seq)
	binary.BigEndian.PutUint64(f[payOff+16:], uint64(now()))
}

func parseFrame(f []byte) (run uint32, seq uint64, sent int64, ok bool) {
	if len(f) < minFrame || [4]byte(f[payOff:payOff+4]) != magic {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint32(f[payOff+4:]), binary.BigEndian.Uint64(f[payOff+8:]),
		int64(binary.BigEndian.Uint64(f[payOff+16:])), true
}

// ---------------------------------------------------------------------------
// generators

// genResult is what a generator did.
type genResult struct {
	sent  uint64
	start int64 // now() at the first send
	end   int64 // now() after the last send
	err   error
}

// blast sends frames with Send (which waits while the socket is full) for
// dur, at most max frames.
func blast(c *client.Client, size int, run uint32, dur time.Duration, max uint64) genResult {
	f := newFrame(size)
	r := genResult{start: now()}
	stop := r.start + int64(dur)
	for r.sent < max {
		if r.sent&127 == 0 && now() >= stop {
			break
		}
		stamp(f, run, r.sent)
		if err := c.Send(f); err != nil {
			r.err = err
			break
		}
		r.sent++
	}
	r.end = now()
	return r
}

// paced sends rate frames/s for dur. Go's timers sleep about 1 ms here, so
// the pacer sleeps with nanosleep on a locked thread with a 1 ns timer
// slack and after each wake-up sends the frames that are due: small bursts
// (1-3 frames at 20,000/s), not 1 ms bursts.
func paced(c *client.Client, size int, run uint32, rate int, dur time.Duration) genResult {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// The slack is per thread; the thread keeps it after the unlock, which
	// harms nothing.
	unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	f := newFrame(size)
	interval := int64(time.Second) / int64(rate)
	total := uint64(int64(dur) / interval)
	r := genResult{start: now()}
	nap := syscall.NsecToTimespec(interval / 2)
	for r.sent < total {
		due := uint64((now()-r.start)/interval) + 1
		if due > total {
			due = total
		}
		for r.sent < due {
			stamp(f, run, r.sent)
			if err := c.Send(f); err != nil {
				r.err = err
				r.end = now()
				return r
			}
			r.sent++
		}
		syscall.Nanosleep(&nap, nil)
	}
	r.end = now()
	return r
}

// ---------------------------------------------------------------------------
// the sink

// sinkOpts says what a sink records besides counts.
type sinkOpts struct {
	run     uint32
	seqs    uint64 // > 0: count receipts per sequence number below seqs
	latency bool   // keep every frame's latency
	// onDup, if set, is called once at the first duplicate.
	onDup func()
	// bins, if set, counts the receipts of numbered frames by time
	// (the hand-off's picture); nothing else depends on it.
	bins *rxBins
}

type sinkResult struct {
	frames, bytes uint64
	unique        uint64 // frames not seen before (when counting per sequence number)
	last          int64  // now() at the last receipt
	seen          []uint8
	lat           []int64
	dupSeen       bool // a sequence number arrived twice
	err           error
}

// sink receives on c until the generator reports how many frames it sent
// (on sent) and then either all of them arrived or none came for idle; and
// in any case no later than hard after it started.
func sink(c *client.Client, o sinkOpts, sent <-chan uint64, idle, hard time.Duration) sinkResult {
	var r sinkResult
	if o.seqs > 0 {
		r.seen = make([]uint8, o.seqs)
	}
	if o.latency {
		r.lat = make([]int64, 0, 1<<16)
	}
	// One recvmmsg takes every frame waiting: the sink's own cost per frame
	// is then small, so that the figures are the forwarder's, not the
	// sink's. Both columns get the same sink.
	bufs := make([][]byte, sinkBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 9300)
	}
	sizes := make([]int, sinkBatch)
	deadline := time.Now().Add(hard)
	want := uint64(0)
	genDone := false
	lastAt := time.Now()
	for {
		got := r.frames
		if r.seen != nil {
			got = r.unique // duplicates do not make up for missing frames
		}
		if genDone && (got >= want || time.Since(lastAt) > idle) {
			return r
		}
		if time.Now().After(deadline) {
			return r
		}
		n, err := c.RecvBatch(bufs, sizes, 20*time.Millisecond)
		if !genDone {
			select {
			case want = <-sent:
				genDone = true
				lastAt = time.Now()
			default:
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			r.err = err
			return r
		}
		t := now()
		for i := 0; i < n; i++ {
			if sizes[i] > len(bufs[i]) {
				continue
			}
			if r.count(o, bufs[i][:sizes[i]], t) {
				lastAt = time.Now()
			}
		}
	}
}

// sinkBatch is how many frames a sink takes in one system call.
const sinkBatch = 32

// count records one frame received at t, calling o.onDup at the first
// duplicate; false if the frame is not this run's.
func (r *sinkResult) count(o sinkOpts, f []byte, t int64) bool {
	run, seq, ts, ok := parseFrame(f)
	if !ok || run != o.run {
		return false
	}
	r.frames++
	r.bytes += uint64(len(f))
	r.last = t
	if r.seen != nil && seq < o.seqs {
		if r.seen[seq] == 0 {
			r.unique++
		}
		if r.seen[seq] < 255 {
			r.seen[seq]++
		}
		if o.bins != nil {
			o.bins.add(t, r.seen[seq] > 1)
		}
		if r.seen[seq] == 2 && !r.dupSeen {
			r.dupSeen = true
			if o.onDup != nil {
				o.onDup()
			}
		}
	}
	if r.lat != nil {
		r.lat = append(r.lat, t-ts)
	}
	return true
}

// lostAndDups counts the sequence numbers below sent never seen, and the
// receipts beyond the first of each.
func (r *sinkResult) lostAndDups(sent uint64) (lost, dups uint64) {
	for i := uint64(0); i < sent && i < uint64(len(r.seen)); i++ {
		switch n := r.seen[i]; {
		case n == 0:
			lost++
		case n > 1:
			dups += uint64(n - 1)
		}
	}
	return lost, dups
}

// percentile returns the p-th percentile (0..100) of sorted values.
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(sorted)-1))
	return sorted[i]
}

func sortInt64(v []int64) { sort.Slice(v, func(i, j int) bool { return v[i] < v[j] }) }

// trial runs a generator against sinks and waits for both, bounded: if the
// sinks or the generator hang past the limit the trial fails.
func trial(gen func() genResult, sinks []func(sent <-chan uint64) sinkResult, limit time.Duration) (genResult, []sinkResult, error) {
	sentChs := make([]chan uint64, len(sinks))
	results := make([]sinkResult, len(sinks))
	done := make(chan int, len(sinks))
	for i, s := range sinks {
		sentChs[i] = make(chan uint64, 1)
		go func(i int, s func(<-chan uint64) sinkResult) {
			results[i] = s(sentChs[i])
			done <- i
		}(i, s)
	}
	genCh := make(chan genResult, 1)
	go func() { genCh <- gen() }()
	timeout := time.After(limit)
	var g genResult
	select {
	case g = <-genCh:
	case <-timeout:
		return g, nil, fmt.Errorf("generator still sending after %v", limit)
	}
	for _, ch := range sentChs {
		ch <- g.sent
	}
	for range sinks {
		select {
		case <-done:
		case <-timeout:
			return g, nil, fmt.Errorf("sinks still receiving after %v", limit)
		}
	}
	if g.err != nil {
		return g, results, fmt.Errorf("generator: %w", g.err)
	}
	for i, r := range results {
		if r.err != nil {
			return g, results, fmt.Errorf("sink %d: %w", i, r.err)
		}
	}
	return g, results, nil
}
