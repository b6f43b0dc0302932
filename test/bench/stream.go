package main

// Scenario 12, multifs only: the same daemon through each way in, 64-byte
// frames, link→host and host→link (one link): vde-2 and seqpacket with
// the Go clients (one frame per send, a batched receive), and QEMU's
// stream framing with a client that writes one frame per call (as QEMU
// does) and one that writes 32 per call. frames/s received and the
// relay's CPU per frame: a stream relay can batch both ways (many frames
// per read, many per sendmsg), a datagram one receives in batches but
// its peer sends one frame per system call.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"multifs/control/client"
)

// endpoint is a bench peer of one transport: what it sends with and what
// it receives with.
type endpoint struct {
	gen  func(size int, run uint32, dur time.Duration, max uint64) genResult
	sink func(run uint32, sent <-chan uint64, idle, hard time.Duration) sinkResult
	stop func()
}

type transport struct {
	name string
	dial func(entry string) (*endpoint, error) // entry: PATH or PATH/host
}

func datagramEndpoint(c *client.Client) *endpoint {
	return &endpoint{
		gen: func(size int, run uint32, dur time.Duration, max uint64) genResult {
			return blast(c, size, run, dur, max)
		},
		sink: func(run uint32, sent <-chan uint64, idle, hard time.Duration) sinkResult {
			return sink(c, sinkOpts{run: run}, sent, idle, hard)
		},
		stop: func() { c.Close() },
	}
}

func streamEndpoint(c *client.Stream, batch int) *endpoint {
	return &endpoint{
		gen: func(size int, run uint32, dur time.Duration, max uint64) genResult {
			return blastStream(c, batch, size, run, dur, max)
		},
		sink: func(run uint32, sent <-chan uint64, idle, hard time.Duration) sinkResult {
			return sinkStream(c, run, sent, idle, hard)
		},
		stop: func() { c.Close() },
	}
}

func transports() []transport {
	stream := func(batch int) func(string) (*endpoint, error) {
		return func(entry string) (*endpoint, error) {
			c, err := client.DialStream(filepath.Join(entry, "stream"))
			if err != nil {
				return nil, err
			}
			return streamEndpoint(c, batch), nil
		}
	}
	return []transport{
		{"vde-2", func(entry string) (*endpoint, error) {
			c, err := dialRetry(entry, "bench")
			if err != nil {
				return nil, err
			}
			return datagramEndpoint(c), nil
		}},
		{"seqpacket", func(entry string) (*endpoint, error) {
			c, err := client.DialSeqpacket(filepath.Join(entry, "seqpacket"))
			if err != nil {
				return nil, err
			}
			return datagramEndpoint(c), nil
		}},
		{"stream, 1 frame per write", stream(1)},
		{"stream, 32 frames per write", stream(32)},
	}
}

func (b *bench) streamRows() error {
	d, err := b.startMultifs("transports")
	if err != nil {
		return err
	}
	defer d.stop()
	section := fmt.Sprintf("12. ways in, multifs only, Go clients, 64 B frames for %v: link → host and host → 1 link", b.dur)
	for _, dir := range []string{"link → host", "host → link"} {
		for _, t := range transports() {
			fps, cpu := perSystem{}, perSystem{}
			for run := 0; run < b.runs; run++ {
				r, err := b.transportRun(d, t, dir == "host → link")
				if err != nil {
					return fmt.Errorf("%s, %s: %w", t.name, dir, err)
				}
				fps["multifs"] = append(fps["multifs"], r.fps)
				cpu["multifs"] = append(cpu["multifs"], r.cpu)
			}
			key := strings.NewReplacer(" ", "_", ",", "", "→", "to", "-", "").Replace(t.name + "." + dir)
			b.addFigure(section, "ways."+key+".fps", dir+", "+t.name+": frames/s received", "fps", fps)
			b.addFigure(section, "ways."+key+".cpu", dir+", "+t.name+": relay CPU per frame", "ns", cpu)
		}
	}
	return nil
}

// transportRun joins a host and a link through t, sends from one to the
// other for b.dur, and leaves; both ends of the same transport.
func (b *bench) transportRun(d *daemon, t transport, fromHost bool) (rate, error) {
	host, err := t.dial(filepath.Join(d.path, "host"))
	if err != nil {
		return rate{}, fmt.Errorf("host: %w", err)
	}
	link, err := t.dial(d.path)
	if err != nil {
		host.stop()
		return rate{}, fmt.Errorf("link: %w", err)
	}
	defer func() {
		link.stop()
		host.stop()
		waitFor(3*time.Second, func() bool {
			n, err := openLinks(d.path)
			data, _ := os.ReadFile(filepath.Join(d.path, "host", "stats"))
			return err == nil && n == 0 && strings.HasPrefix(string(data), "attached: no")
		})
	}()
	if err := waitFor(3*time.Second, func() bool {
		n, err := openLinks(d.path)
		data, _ := os.ReadFile(filepath.Join(d.path, "host", "stats"))
		return err == nil && n == 1 && strings.HasPrefix(string(data), "attached: yes")
	}); err != nil {
		return rate{}, fmt.Errorf("joining: %w", err)
	}
	from, to := link, host
	if fromHost {
		from, to = host, link
	}
	run := nextRun()
	meter, err := startCPU(d.pid)
	if err != nil {
		return rate{}, err
	}
	g, rs, err := trial(
		func() genResult { return from.gen(64, run, b.dur, b.maxFrames()) },
		[]func(<-chan uint64) sinkResult{func(sent <-chan uint64) sinkResult {
			return to.sink(run, sent, idleAfterGen, b.dur+10*time.Second)
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
	return rate{fps: float64(r.frames) / secs, loss: lossPct(g.sent, r.frames), cpu: float64(cpu.Nanoseconds()) / float64(r.frames)}, nil
}

// blastStream sends frames on a stream for dur (at most max), batch
// frames per write; a write waits while the socket is full.
func blastStream(c *client.Stream, batch, size int, run uint32, dur time.Duration, max uint64) genResult {
	f := newFrame(size)
	frames := make([][]byte, batch)
	for i := range frames {
		frames[i] = append([]byte(nil), f...)
	}
	r := genResult{start: now()}
	stop := r.start + int64(dur)
	for r.sent < max {
		if r.sent&127 < uint64(batch) && now() >= stop {
			break
		}
		var err error
		if batch == 1 {
			stamp(f, run, r.sent)
			err = c.Send(f)
		} else {
			for i := range frames {
				stamp(frames[i], run, r.sent+uint64(i))
			}
			err = c.SendBatch(frames)
		}
		if err != nil {
			r.err = err
			break
		}
		r.sent += uint64(batch)
	}
	r.end = now()
	return r
}

// sinkStream is sink for a stream: big reads, the frames parsed in place.
func sinkStream(c *client.Stream, run uint32, sent <-chan uint64, idle, hard time.Duration) sinkResult {
	var r sinkResult
	o := sinkOpts{run: run}
	conn := c.Conn()
	buf := make([]byte, 256<<10)
	have := 0
	deadline := time.Now().Add(hard)
	want := uint64(0)
	genDone := false
	lastAt := time.Now()
	for {
		if genDone && (r.frames >= want || time.Since(lastAt) > idle) {
			return r
		}
		if time.Now().After(deadline) {
			return r
		}
		if !genDone {
			select {
			case want = <-sent:
				genDone = true
				lastAt = time.Now()
			default:
			}
		}
		conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		n, err := conn.Read(buf[have:])
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			r.err = err
			return r
		}
		have += n
		t := now()
		off := 0
		for have-off >= 4 {
			l := int(binary.BigEndian.Uint32(buf[off:]))
			if l > 9300 {
				r.err = fmt.Errorf("stream out of step: length %d", l)
				return r
			}
			if have-off < 4+l {
				break
			}
			if r.count(o, buf[off+4:off+4+l], t) {
				lastAt = time.Now()
			}
			off += 4 + l
		}
		have = copy(buf, buf[off:have])
	}
}
