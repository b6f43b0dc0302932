package main

// Scenarios 9 and 10: the control plane (multifs only: the reference has
// no tree to look at) and memory.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"multifs/control/client"
	"multifs/fsys/treeclient"
)

const manyLinks = 1000

// ---------------------------------------------------------------------------
// 5. control plane

func (b *bench) controlPlane() error {
	const section = "9. control plane (multifs only)"
	d, err := b.startMultifs("ctl")
	if err != nil {
		return err
	}
	defer d.stop()

	samples := 30
	if b.quick {
		samples = 10
	}
	var dial, visible, closeWrite, closeEOF []float64
	for i := 0; i < samples; i++ {
		id, err := linksTotal(d.path)
		if err != nil {
			return err
		}
		entry := filepath.Join(d.path, "links", strconv.FormatUint(id+1, 10))

		t0 := time.Now()
		c, err := client.Dial(d.path, "bench control-plane link")
		if err != nil {
			return err
		}
		dial = append(dial, ms(time.Since(t0)))
		if err := spinUntil(2*time.Second, func() bool { _, err := os.Stat(entry); return err == nil }); err != nil {
			c.Close()
			return fmt.Errorf("%s never appeared: %w", entry, err)
		}
		visible = append(visible, ms(time.Since(t0)))

		t1 := time.Now()
		if err := os.WriteFile(filepath.Join(entry, "close"), []byte("1\n"), 0); err != nil {
			c.Close()
			return fmt.Errorf("closing %s: %w", entry, err)
		}
		closeWrite = append(closeWrite, ms(time.Since(t1)))
		select {
		case <-c.Done():
			closeEOF = append(closeEOF, ms(time.Since(t1)))
		case <-time.After(2 * time.Second):
			c.Close()
			return fmt.Errorf("the client saw no EOF 2 s after writing %s/close", entry)
		}
		c.Close()
	}
	b.res.add(section, "control.dial", "Dial (vde-2 handshake) p50", "ms", dial, nil)
	b.res.add(section, "control.dial_to_visible.p50", "Dial → links/N visible, p50", "ms", visible, nil)
	b.res.add(section, "control.dial_to_visible.max", "Dial → links/N visible, max", "ms", []float64{maxOf(visible)}, nil)
	b.res.add(section, "control.close_write", "write to close returned, p50", "ms", closeWrite, nil)
	b.res.add(section, "control.close_to_eof.p50", "close → client EOF, p50", "ms", closeEOF, nil)
	b.res.add(section, "control.close_to_eof.max", "close → client EOF, max", "ms", []float64{maxOf(closeEOF)}, nil)

	// ls links with 1,000 open links.
	t := time.Now()
	cs, err := dialLinks(d.path, manyLinks)
	if err != nil {
		return err
	}
	defer closeAll(cs)
	dialAll := time.Since(t)
	b.res.add(section, "control.dial_1000", fmt.Sprintf("%s links joining, one after the other", thousands(manyLinks)), "ms", []float64{ms(dialAll)}, nil)
	// Every Dial has returned, so every link should be listed. If the
	// daemon lags (or lost some), say so and wait a little for it.
	open, err := openLinks(d.path)
	if err != nil {
		return err
	}
	if open != manyLinks {
		t := time.Now()
		waitFor(2*time.Second, func() bool { n, _ := openLinks(d.path); return n == manyLinks })
		now, _ := openLinks(d.path)
		b.res.notice("control plane: right after %d Dials returned, stats said links: %d (%d after waiting %.0f ms more)",
			manyLinks, open, now, ms(time.Since(t)))
	}
	var ls []float64
	counts := map[int]int{}
	for i := 0; i < max(b.runs, 5); i++ {
		t := time.Now()
		ents, err := os.ReadDir(filepath.Join(d.path, "links"))
		if err != nil {
			return err
		}
		ls = append(ls, ms(time.Since(t)))
		counts[len(ents)]++
	}
	if len(counts) != 1 || counts[manyLinks] == 0 {
		b.res.notice("control plane: ls links with %d links open listed %v (entries: times)", manyLinks, counts)
	}
	b.res.add(section, "control.ls_1000", fmt.Sprintf("ls links with %s links", thousands(manyLinks)), "ms", ls, nil)
	return nil
}

// openLinks reads "links" (open now) from PATH/stats.
func openLinks(path string) (int, error) {
	v, err := statsValue(path, "links")
	return int(v), err
}

// linksTotal reads links_total (ever opened) from PATH/stats.
func linksTotal(path string) (uint64, error) { return statsValue(path, "links_total") }

// statsValue reads the number KEY of DIR/stats.
func statsValue(dir, key string) (uint64, error) {
	st, err := readStats(filepath.Join(dir, "stats"))
	if err != nil {
		return 0, err
	}
	v, ok := st.Uint(key)
	if !ok {
		return 0, fmt.Errorf("%s/stats has no number %s", dir, key)
	}
	return v, nil
}

// readStats reads a stats file of a multifs the bench started, with the
// daemon's client's bounded parser (treeclient.ReadStats). It opens the
// path as it is, in this process: the bench's daemons and their paths are
// its own (in its private temporary directory), and what it times is what
// a reader of the file sees; a Client's reader process would add its own
// round trip to every read.
func readStats(path string) (treeclient.Stats, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := treeclient.ReadStats(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// spinUntil retries cond without sleeping (each try is a FUSE round trip),
// for at most limit.
func spinUntil(limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", limit)
		}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func maxOf(v []float64) float64 {
	m := v[0]
	for _, x := range v[1:] {
		m = max(m, x)
	}
	return m
}

// ---------------------------------------------------------------------------
// 6. memory

func (b *bench) memory() error {
	const section = "10. memory: resident set of the daemon (reference: the vde_plug multi process)"
	steps := []int{0, 100, manyLinks}
	mrss, err := b.rssSteps(steps, func() (string, int, func(), error) {
		d, err := b.startMultifs("mem")
		if err != nil {
			return "", 0, nil, err
		}
		return d.path, d.pid, d.stop, nil
	})
	if err != nil {
		return fmt.Errorf("multifs: %w", err)
	}
	var rrss []*float64
	if b.vdePlug != "" {
		rrss, err = b.rssSteps(steps, func() (string, int, func(), error) {
			r, err := b.startRef("mem-ref")
			if err != nil {
				return "", 0, nil, err
			}
			return r.multi, r.proc.pid(), r.proc.kill, nil
		})
		if err != nil {
			return fmt.Errorf("reference: %w", err)
		}
	} else {
		rrss = make([]*float64, len(steps))
	}
	for i, n := range steps {
		label, key := fmt.Sprintf("RSS with %s links", thousands(int64(n))), fmt.Sprintf("memory.rss_%d", n)
		if n == 0 {
			label, key = "RSS idle (no host, no link)", "memory.rss_idle"
		}
		b.res.one(section, key, label, "MiB", mrss[i], rrss[i])
	}
	// The peak of the processes the throughput scenarios pushed hardest.
	if b.data != nil {
		var peak [2]*float64
		for i, s := range b.data {
			if v, err := procStatus(s.pid, "VmHWM"); err == nil {
				x := float64(v) / (1 << 20)
				peak[i] = &x
			}
		}
		b.res.one(section, "memory.peak_after_traffic", "peak RSS (VmHWM) after the Go clients' runs", "MiB", peak[0], peak[1])
	}
	return nil
}

// rssSteps starts a system, then reads its VmRSS with each number of
// links open (links added cumulatively), in MiB.
func (b *bench) rssSteps(steps []int, start func() (dir string, pid int, stop func(), err error)) ([]*float64, error) {
	dir, pid, stop, err := start()
	if err != nil {
		return nil, err
	}
	defer stop()
	var cs []*client.Client
	defer func() { closeAll(cs) }()
	out := make([]*float64, len(steps))
	for i, n := range steps {
		if more := n - len(cs); more > 0 {
			added, err := dialLinks(dir, more)
			if err != nil {
				return nil, fmt.Errorf("with %d links open: %w", len(cs), err)
			}
			cs = append(cs, added...)
		}
		time.Sleep(200 * time.Millisecond) // let the peer settle its allocations
		// Each link costs its peer at least one descriptor: check that the
		// links really are open there.
		if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil && len(fds) < n {
			return nil, fmt.Errorf("%d links dialled but the process has only %d descriptors", n, len(fds))
		}
		v, err := procStatus(pid, "VmRSS")
		if err != nil {
			return nil, err
		}
		x := float64(v) / (1 << 20)
		out[i] = &x
	}
	return out, nil
}
