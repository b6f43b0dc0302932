package main

// Scenario 11: tap-to-tap TCP and 64-byte UDP through one link, with
// iperf3. Two network namespaces of our own, each with a tap on its side's
// host, 169.254.77.1 and .2; iperf3 runs from A to B for one second, TCP
// then UDP (64-byte datagrams, as fast as the client can send them).
//
//	multifs:    tapA ═ multifs A (--host tap://) ─ vde_plug A B ─ multifs B (--host tap://) ═ tapB
//	reference:  tapA ─ vde_plug multi://A ─── vde_plug A B ─── vde_plug multi://B ─ tapB
//
// In both, the multilink owns the tap: same number of hops.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func (b *bench) iperf() error {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.res.notice("iperf3 not found (apt-get install iperf3): scenario 11, tap-to-tap TCP, skipped")
		return nil
	}
	if b.vdePlug == "" {
		b.res.notice("vde_plug not found: scenario 11, tap-to-tap TCP, skipped")
		return nil
	}
	if _, err := exec.LookPath("ip"); err != nil {
		b.res.notice("ip (iproute2) not found: scenario 11, tap-to-tap TCP, skipped")
		return nil
	}
	if os.Geteuid() != 0 {
		b.res.notice("not root: scenario 11, tap-to-tap TCP (namespaces, taps), skipped")
		return nil
	}
	tag := fmt.Sprintf("%d", os.Getpid()%100000)
	nsA, nsB, err := b.netnsPair("mfbench-" + tag)
	if err != nil {
		return err
	}
	sides := tapSides{name: "ip", nsA: nsA, nsB: nsB, tapA: "mfbA" + tag, tapB: "mfbB" + tag, addrA: "169.254.77.1/24", addrB: "169.254.77.2/24"}

	type column struct {
		name  string
		setup func() (*tapNet, error)
	}
	cols := []column{{"multifs", func() (*tapNet, error) { return b.tapNetMultifs(sides) }}}
	cols = append(cols, column{"reference", func() (*tapNet, error) { return b.tapNetRef(sides) }})
	mbps, retr, udpPPS, udpLoss := perSystem{}, perSystem{}, perSystem{}, perSystem{}
	for _, c := range cols {
		tn, err := c.setup()
		if err != nil {
			tn.stop()
			return fmt.Errorf("%s: %w", c.name, err)
		}
		stop := tn.stop
		// One server for the column's runs (not -1: a failed first
		// attempt would leave nobody listening).
		srv, err := b.spawn("iperf3-server-"+c.name+".log", "ip", "netns", "exec", nsB, "iperf3", "-s", "-B", sides.ipB())
		if err != nil {
			stop()
			return err
		}
		if err := waitListening(nsB, "5201"); err != nil {
			srv.kill()
			stop()
			return fmt.Errorf("%s: iperf3 server: %w", c.name, err)
		}
		s := &system{name: c.name}
		for run := 0; run < b.runs; run++ {
			bps, r, err := iperfOnce(nsA, sides.ipB())
			if err != nil {
				srv.kill()
				stop()
				log, _ := os.ReadFile(filepath.Join(b.tmp, "iperf3-server-"+c.name+".log"))
				return fmt.Errorf("%s, run %d: %w (server: %q)", c.name, run+1, err, strings.TrimSpace(string(log)))
			}
			mbps.put(s, bps/1e6)
			retr.put(s, r)
			pps, loss, err := iperfUDPOnce(nsA, sides.ipB())
			if err != nil {
				srv.kill()
				stop()
				return fmt.Errorf("%s, UDP run %d: %w", c.name, run+1, err)
			}
			udpPPS.put(s, pps)
			udpLoss.put(s, loss)
		}
		srv.kill()
		stop()
	}
	const section = "11. tap-to-tap through one link, iperf3 -t 1 (both: the multilink owns the tap)"
	b.addFigure(section, "iperf.mbps", "TCP throughput", "Mbit/s", mbps)
	b.addFigure(section, "iperf.retransmits", "TCP retransmits", "count", retr)
	b.addFigure(section, "iperf.udp64.fps", "UDP 64 B datagrams/s received", "fps", udpPPS)
	b.addFigure(section, "iperf.udp64.loss", "UDP 64 B loss", "%", udpLoss)
	return nil
}

// netnsPair makes the namespaces PREFIX-a and PREFIX-b, with lo up, and
// registers their removal.
func (b *bench) netnsPair(prefix string) (string, string, error) {
	nsA, nsB := prefix+"-a", prefix+"-b"
	for _, ns := range []string{nsA, nsB} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("ip netns add %s: %v: %s", ns, err, out)
		}
		b.clean.add(func() { exec.Command("ip", "netns", "del", ns).Run() })
		if err := nsRun(ns, "ip", "link", "set", "lo", "up"); err != nil {
			return "", "", err
		}
	}
	return nsA, nsB, nil
}

// tapSides names the two ends of a tap-to-tap path: the namespaces, their
// taps and addresses (with the prefix length), and the prefix of the
// multilinks' names in the scratch directory.
type tapSides struct {
	name, nsA, nsB, tapA, tapB, addrA, addrB string
}

// ipB is B's address without the prefix length.
func (s tapSides) ipB() string { ip, _, _ := strings.Cut(s.addrB, "/"); return ip }

// tapNet is a path from tapA to tapB through one link: two multilinks
// that own their taps, joined by `vde_plug A B`.
type tapNet struct {
	a, b string // where links join: the multifs mounts or the reference's multi:// directories
	link *proc  // the link first made
	stop func() // ends everything (safe on a half-made path)
}

// tapNetMultifs makes tapA ═ multifs A ═ link ═ multifs B ═ tapB: each
// multifs opens its tap itself (--host tap://, and args), as the
// reference's multilink does, and the tap is then moved into its
// namespace.
func (b *bench) tapNetMultifs(s tapSides, args ...string) (*tapNet, error) {
	tn := &tapNet{stop: func() {}}
	a, err := b.startMultifs(s.name+"A", append([]string{"--host", "tap://" + s.tapA}, args...)...)
	if err != nil {
		return tn, err
	}
	tn.stop = a.stop
	bb, err := b.startMultifs(s.name+"B", append([]string{"--host", "tap://" + s.tapB}, args...)...)
	if err != nil {
		return tn, err
	}
	tn.a, tn.b = a.path, bb.path
	tn.stop = func() {
		if tn.link != nil {
			tn.link.kill()
		}
		a.stop()
		bb.stop()
	}
	for _, side := range []struct{ ns, tap, addr string }{{s.nsA, s.tapA, s.addrA}, {s.nsB, s.tapB, s.addrB}} {
		if out, err := exec.Command("ip", "link", "set", side.tap, "netns", side.ns).CombinedOutput(); err != nil {
			return tn, fmt.Errorf("moving %s into %s: %v: %s", side.tap, side.ns, err, out)
		}
		if err := upTap(side.ns, side.tap, side.addr); err != nil {
			return tn, err
		}
	}
	if tn.link, err = b.spawn(s.name+"-link.log", b.vdePlug, a.path, bb.path); err != nil {
		return tn, err
	}
	return tn, waitPing(s.nsA, s.ipB())
}

// tapNetRef makes tapA ─ vde_plug multi://A ═ link ═ vde_plug multi://B ─ tapB.
func (b *bench) tapNetRef(s tapSides) (*tapNet, error) {
	var procs []*proc
	tn := &tapNet{}
	tn.stop = func() {
		if tn.link != nil {
			tn.link.kill()
		}
		for _, p := range procs {
			p.kill()
		}
	}
	var multis []string
	for _, side := range []struct{ ns, name, tap, addr string }{
		{s.nsA, s.name + "RefA", s.tapA, s.addrA},
		{s.nsB, s.name + "RefB", s.tapB, s.addrB},
	} {
		multi := filepath.Join(b.tmp, side.name)
		p, err := b.spawn(side.name+".log", "ip", "netns", "exec", side.ns, b.vdePlug, "multi://"+multi, "tap://"+side.tap)
		if err != nil {
			return tn, err
		}
		procs = append(procs, p)
		if err := waitFor(3*time.Second, func() bool { return exists(filepath.Join(multi, "ctl")) }); err != nil {
			return tn, fmt.Errorf("vde_plug multi://%s: no ctl", multi)
		}
		if err := upTap(side.ns, side.tap, side.addr); err != nil {
			return tn, err
		}
		multis = append(multis, multi)
	}
	tn.a, tn.b = multis[0], multis[1]
	var err error
	if tn.link, err = b.spawn(s.name+"Ref-link.log", b.vdePlug, tn.a, tn.b); err != nil {
		return tn, err
	}
	return tn, waitPing(s.nsA, s.ipB())
}

func nsRun(ns string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("in %s: %s: %v: %s", ns, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// upTap waits for vde_plug to create the tap, then addresses it.
func upTap(ns, tap, addr string) error {
	err := waitFor(3*time.Second, func() bool {
		return exec.Command("ip", "netns", "exec", ns, "ip", "link", "show", tap).Run() == nil
	})
	if err != nil {
		return fmt.Errorf("tap %s did not appear in %s", tap, ns)
	}
	if err := nsRun(ns, "ip", "addr", "add", addr, "dev", tap); err != nil {
		return err
	}
	return nsRun(ns, "ip", "link", "set", tap, "up")
}

// waitPing waits (at most 10 tries of 1 s) until the far side answers.
func waitPing(ns, addr string) error {
	for i := 0; i < 10; i++ {
		if nsRun(ns, "ping", "-c", "1", "-W", "1", addr) == nil {
			return nil
		}
	}
	return fmt.Errorf("no ping reply from %s", addr)
}

// waitListening waits (up to 5 s) until something listens on TCP port in
// ns: the iperf3 server, started in the background, takes a moment, and a
// client that comes too early is refused.
func waitListening(ns, port string) error {
	return waitFor(5*time.Second, func() bool {
		out, err := exec.Command("ip", "netns", "exec", ns, "ss", "-Hltn", "sport = :"+port).Output()
		return err == nil && len(strings.TrimSpace(string(out))) > 0
	})
}

// iperfClient runs one iperf3 client of secs seconds in nsA against the
// server at server with extra arguments, and decodes its JSON report into r. A refused
// connect is retried, in case the server is not quite ready.
func iperfClient(nsA, server string, secs int, r any, extra ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+20)*time.Second)
	defer cancel()
	args := append([]string{"netns", "exec", nsA, "iperf3", "-c", server, "-t", fmt.Sprint(secs), "-J", "--connect-timeout", "1000"}, extra...)
	var out []byte
	var err error
	for i := 0; i < 10; i++ {
		cli := exec.CommandContext(ctx, "ip", args...)
		cli.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if out, err = cli.Output(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("iperf3 %s: %v: %s", strings.Join(extra, " "), err, iperfError(out))
	}
	if err := json.Unmarshal(out, r); err != nil {
		return fmt.Errorf("iperf3 %s output: %v", strings.Join(extra, " "), err)
	}
	if e := iperfError(out); e != "" {
		return fmt.Errorf("iperf3 %s: %s", strings.Join(extra, " "), e)
	}
	return nil
}

// iperfOnce runs one 1-second TCP test from A to the server in B and
// returns the receiver's bits/s and the sender's retransmits.
func iperfOnce(nsA, server string) (float64, float64, error) {
	var r struct {
		End struct {
			SumSent struct {
				Retransmits float64 `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := iperfClient(nsA, server, 1, &r); err != nil {
		return 0, 0, err
	}
	return r.End.SumReceived.BitsPerSecond, r.End.SumSent.Retransmits, nil
}

// iperfUDPOnce runs one 1-second test of 64-byte UDP datagrams from A to
// B, as fast as the client sends them, and returns the datagrams per
// second the server received and the loss in percent.
func iperfUDPOnce(nsA, server string) (float64, float64, error) {
	var r struct {
		End struct {
			Sum struct {
				LostPercent float64 `json:"lost_percent"`
			} `json:"sum"`
			SumReceived struct {
				Bytes   float64 `json:"bytes"`
				Seconds float64 `json:"seconds"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := iperfClient(nsA, server, 1, &r, "-u", "-l", "64", "-b", "0"); err != nil {
		return 0, 0, err
	}
	if r.End.SumReceived.Seconds <= 0 {
		return 0, 0, fmt.Errorf("iperf3 -u: no receiver report")
	}
	return r.End.SumReceived.Bytes / 64 / r.End.SumReceived.Seconds, r.End.Sum.LostPercent, nil
}

// iperfError picks the error out of iperf3's JSON output.
func iperfError(out []byte) string {
	var r struct {
		Error string `json:"error"`
	}
	json.Unmarshal(out, &r)
	return r.Error
}
