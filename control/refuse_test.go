package control

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"multifs/control/client"
)

func TestCloseForGoodRefusesReconnect(t *testing.T) {
	// Many rounds: the refusal must be in place before the hang-up, so
	// that no reconnect, however quick, slips in.
	for round := 0; round < 30; round++ {
		_, ml, srv := serve(t)
		c, done := reconnectAfterEOF(srv.LinkSeqpacket())
		if c == nil {
			t.Fatal(<-done)
		}
		waitFor(t, "joined", func() bool { return len(ml.Links()) == 1 })
		if err := ml.CloseLinkForGood(ml.Links()[0].ID); err != nil {
			t.Fatal(err)
		}
		if err := <-done; !errors.Is(err, unix.ECONNREFUSED) {
			t.Fatalf("round %d: reconnect: %v, want ECONNREFUSED", round, err)
		}
		if n := len(ml.Links()); n != 0 || ml.Totals().LinksTotal != 1 {
			t.Fatalf("round %d: %d links open, %d ever: the reconnect joined", round, n, ml.Totals().LinksTotal)
		}
		if n := srv.refused.len(); n != 1 {
			t.Fatalf("round %d: %d refusals held, want 1", round, n)
		}
		srv.Close()
		ml.Close()
	}
}

// Only the entry its port was at: a process whose link was closed may
// still be a host, and a host closed for good may still be a link.
func TestCloseForGoodPerEntry(t *testing.T) {
	_, ml, srv := serve(t)
	h, done := reconnectAfterEOF(srv.HostSeqpacket())
	if h == nil {
		t.Fatal(<-done)
	}
	waitFor(t, "host", ml.HostAttached)
	ml.Host().CloseForGood()
	if err := <-done; !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("host reconnect: %v, want ECONNREFUSED", err)
	}
	if ml.HostAttached() {
		t.Fatal("the refused host attached")
	}
	l := dialSeq(t, srv.LinkSeqpacket())
	waitFor(t, "link", func() bool { return len(ml.Links()) == 1 })
	_ = l
	if _, err := client.DialSeqpacket(srv.HostSeqpacket()); !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("host entry again: %v", err)
	}
}

// A plain close (the peer's own EOF, an error, CloseLink) refuses nothing.
func TestCloseLinkStillRejoins(t *testing.T) {
	_, ml, srv := serve(t)
	c, done := reconnectAfterEOF(srv.LinkSeqpacket())
	if c == nil {
		t.Fatal(<-done)
	}
	waitFor(t, "joined", func() bool { return len(ml.Links()) == 1 })
	ml.Links()[0].Close()
	if err := <-done; err != nil {
		t.Fatalf("reconnect after a plain close: %v", err)
	}
	if srv.refused.len() != 0 {
		t.Fatal("a plain close left a refusal")
	}
}

// vde-2 peers do not reconnect: nothing is remembered for them.
func TestCloseForGoodVde2Untouched(t *testing.T) {
	root, ml, srv := serve(t)
	dial(t, root)
	waitFor(t, "joined", func() bool { return len(ml.Links()) == 1 })
	ml.CloseLinkForGood(ml.Links()[0].ID)
	if srv.refused.len() != 0 {
		t.Fatal("a vde-2 link left a refusal")
	}
	dial(t, root)
	waitFor(t, "rejoined", func() bool { return len(ml.Links()) == 1 })
}

// While the daemon stops (the multilink closed, the entries still there),
// a reconnect gets ESHUTDOWN.
func TestSeqpacketShutdownAck(t *testing.T) {
	_, ml, srv := serve(t)
	ml.Close()
	if _, err := client.DialSeqpacket(srv.LinkSeqpacket()); !errors.Is(err, unix.ESHUTDOWN) {
		t.Fatalf("link: %v, want ESHUTDOWN", err)
	}
	if _, err := client.DialSeqpacket(srv.HostSeqpacket()); !errors.Is(err, unix.ESHUTDOWN) {
		t.Fatalf("host: %v, want ESHUTDOWN", err)
	}
}

// The helper process for TestRefusalEndsWithProcess: a ptp-like client in
// a process of its own.
func TestRefuseHelperProcess(t *testing.T) {
	path := os.Getenv("MULTIFS_REFUSE_HELPER")
	if path == "" {
		return
	}
	c, done := reconnectAfterEOF(path)
	if c == nil {
		os.Stdout.WriteString("dial: " + errString(<-done) + "\n")
		os.Exit(1)
	}
	os.Stdout.WriteString("joined\n")
	os.Stdout.WriteString("reconnect: " + errString(<-done) + "\n")
	// Stay until told, so that the parent sees the entry held while we
	// run.
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// The refusal is for the process, not for its pid: another process (here
// another pid, since pids cannot be made to come round in a test; the
// table test below shows an entry goes when its process exits) is
// admitted, and once the process exits the entry and its pidfd are gone.
func TestRefusalEndsWithProcess(t *testing.T) {
	_, ml, srv := serve(t)
	fds0 := countFDs(t)
	cmd, out, in := startHelper(t, srv.LinkSeqpacket())
	if got := readLine(t, out); got != "joined" {
		t.Fatalf("helper: %q", got)
	}
	waitFor(t, "joined", func() bool { return len(ml.Links()) == 1 })
	p := ml.Links()[0]
	if p.Info.PID != int32(cmd.Process.Pid) {
		t.Fatalf("pid %d, helper %d", p.Info.PID, cmd.Process.Pid)
	}
	ml.CloseLinkForGood(p.ID)
	if got := readLine(t, out); !strings.Contains(got, "connection refused") {
		t.Fatalf("helper's reconnect: %q", got)
	}
	if srv.refused.len() != 1 {
		t.Fatal("no refusal held while the helper runs")
	}
	// This process is not the helper: it joins.
	other := dialSeq(t, srv.LinkSeqpacket())
	waitFor(t, "another process joins", func() bool { return len(ml.Links()) == 1 })
	in.Close()
	cmd.Wait()
	if n := srv.refused.len(); n != 0 {
		t.Fatalf("%d refusals held after the helper exited", n)
	}
	other.Close()
	for _, l := range ml.Links() {
		l.Close()
	}
	// The pidfd went with the entry (the helper's pipes too).
	for deadline := time.Now().Add(2 * time.Second); countFDs(t) > fds0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := countFDs(t); n > fds0 {
		t.Fatalf("%d descriptors open, %d before", n, fds0)
	}
}

// The table: an entry lives while its process does (a zombie is gone
// too: its pid cannot be reused before it is reaped, and it connects no
// more), and is dropped when a reconnect asks after that.
func TestRefusalsTable(t *testing.T) {
	var r refusals
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pid := int32(cmd.Process.Pid)
	pidfd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		t.Fatal(err)
	}
	r.add(false, pid, 1000, pidfd, 7)
	if e, ok := r.refuses(false, pid); !ok || e.link != 7 {
		t.Fatalf("refuses: %v %+v", ok, e)
	}
	if _, ok := r.refuses(true, pid); ok {
		t.Fatal("refused at the host entry")
	}
	if _, ok := r.refuses(false, pid+1); ok {
		t.Fatal("refused another pid")
	}
	cmd.Process.Kill()
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, ok := r.refuses(false, pid)
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still refused after the process was killed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r.len() != 0 {
		t.Fatal("entry kept")
	}
	cmd.Wait()
	// Whoever has that pid now is admitted.
	if _, ok := r.refuses(false, pid); ok {
		t.Fatal("the pid is refused after its process went")
	}
}

func TestRefusalsBoundAndClose(t *testing.T) {
	var r refusals
	fds0 := countFDs(t)
	self := os.Getpid()
	for i := 0; i < maxRefusedPerUID+10; i++ {
		// Live pidfds (of this process), so none is pruned as exited:
		// only the bound can drop them.
		fd, err := unix.PidfdOpen(self, 0)
		if err != nil {
			t.Fatal(err)
		}
		r.add(false, int32(100000+i), 1000, fd, uint64(i))
	}
	if n := r.len(); n != maxRefusedPerUID {
		t.Fatalf("%d entries, want %d", n, maxRefusedPerUID)
	}
	if _, ok := r.refuses(false, 100000); ok {
		t.Fatal("the oldest entry is still there")
	}
	if _, ok := r.refuses(false, int32(100000+maxRefusedPerUID+9)); !ok {
		t.Fatal("the newest entry is missing")
	}
	if n := countFDs(t) - fds0; n != maxRefusedPerUID+1 {
		t.Fatalf("%d descriptors open for %d entries (and the epoll instance)", n, maxRefusedPerUID)
	}
	// The same process closed again replaces its entry.
	fd, _ := unix.PidfdOpen(self, 0)
	r.add(false, int32(100000+maxRefusedPerUID+9), 1000, fd, 1)
	if n := countFDs(t) - fds0; n != maxRefusedPerUID+1 {
		t.Fatalf("%d descriptors after a repeat", n)
	}
	r.closeAll()
	if n := countFDs(t); n != fds0 {
		t.Fatalf("%d descriptors after closeAll, %d before", n, fds0)
	}
	fd, _ = unix.PidfdOpen(self, 0)
	r.add(false, 1, 1000, fd, 1)
	if countFDs(t) != fds0 || r.len() != 0 {
		t.Fatal("an add after closeAll was kept")
	}
}

// One user's closes cannot undo another's: root's closed process stays
// refused however many processes of its own another uid has closed (with
// the bounds the daemon uses), and that uid loses its own oldest.
func TestRefusalsNoCrossUIDEviction(t *testing.T) {
	var r refusals
	defer r.closeAll()
	self := os.Getpid()
	pidfd := func() int {
		fd, err := unix.PidfdOpen(self, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	const rootPid, userPid = 4242, 100000
	r.add(false, rootPid, 0, pidfd(), 1)
	r.add(true, rootPid+1, 0, pidfd(), 0)
	n := maxRefusedPerUID + 200
	for i := 0; i < n; i++ {
		r.add(false, int32(userPid+i), 1000, pidfd(), uint64(2+i))
	}
	if _, ok := r.refuses(false, rootPid); !ok {
		t.Fatalf("root's closed link forgotten after %d closes by uid 1000", n)
	}
	if _, ok := r.refuses(true, rootPid+1); !ok {
		t.Fatalf("root's closed host forgotten after %d closes by uid 1000", n)
	}
	if got := r.lenUID(1000); got != maxRefusedPerUID {
		t.Fatalf("uid 1000 holds %d, want its bound %d", got, maxRefusedPerUID)
	}
	if _, ok := r.refuses(false, int32(userPid+n-maxRefusedPerUID-1)); ok {
		t.Fatal("uid 1000's entry past its bound is still there")
	}
	if _, ok := r.refuses(false, int32(userPid+n-maxRefusedPerUID)); !ok {
		t.Fatal("uid 1000's oldest entry within its bound is missing")
	}
	if got := r.len(); got != maxRefusedPerUID+2 {
		t.Fatalf("%d entries, want %d", got, maxRefusedPerUID+2)
	}
}

// The dead are pruned before a live entry is dropped for room: a uid at
// its bound one of whose processes exited keeps all its live entries.
func TestRefusalsPruneBeforeEvict(t *testing.T) {
	r := refusals{capUID: 2, capAll: 4}
	defer r.closeAll()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	dead, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	live, _ := unix.PidfdOpen(os.Getpid(), 0)
	r.add(false, int32(cmd.Process.Pid), 7, dead, 1)
	r.add(false, 2, 7, live, 2)
	cmd.Process.Kill()
	cmd.Wait()
	live, _ = unix.PidfdOpen(os.Getpid(), 0)
	r.add(false, 3, 7, live, 3)
	for _, pid := range []int32{2, 3} {
		if _, ok := r.refuses(false, pid); !ok {
			t.Fatalf("live entry %d dropped while a dead one held room", pid)
		}
	}
}

// The bound in all, met by many uids: the entry that goes is the oldest of
// the uid holding the most, never a uid's newest; a newcomer that would
// have to take some uid's last entry is not recorded. Checked after every
// add of a random sequence, with small bounds.
func TestRefusalsFairWhenFull(t *testing.T) {
	const capUID, capAll = 4, 8
	r := refusals{capUID: capUID, capAll: capAll}
	defer r.closeAll()
	self := os.Getpid()
	newest := map[uint32]int32{} // each uid's last recorded process
	rng := uint64(1)
	next := func(n int) int {
		rng = rng*6364136223846793005 + 1442695040888963407
		return int((rng >> 33) % uint64(n))
	}
	pid := int32(1000)
	refusedAdds := 0
	for i := 0; i < 3000; i++ {
		// A few heavy uids and a long tail of light ones.
		uid := uint32(next(3))
		if next(2) == 0 {
			uid = uint32(100 + next(40))
		}
		fd, err := unix.PidfdOpen(self, 0)
		if err != nil {
			t.Fatal(err)
		}
		pid++
		before := map[uint32]int{}
		r.mu.Lock()
		for v, q := range r.byUID {
			before[v] = len(q)
		}
		total := r.n
		r.mu.Unlock()
		if !r.add(false, pid, uid, fd, uint64(pid)) {
			refusedAdds++
			// Only when nothing could go for it: full, the uid holds
			// none, and nobody holds more than one.
			if total < capAll || before[uid] != 0 {
				t.Fatalf("add %d (uid %d) not recorded: %d held, uid holds %d", i, uid, total, before[uid])
			}
			for v, c := range before {
				if c > 1 {
					t.Fatalf("add %d (uid %d) not recorded while uid %d holds %d", i, uid, v, c)
				}
			}
		} else {
			newest[uid] = pid
		}
		r.mu.Lock()
		if r.n > capAll {
			t.Fatalf("%d entries, bound %d", r.n, capAll)
		}
		sum := 0
		for v, q := range r.byUID {
			c := len(q)
			sum += c
			if c > capUID {
				t.Fatalf("uid %d holds %d, bound %d", v, c, capUID)
			}
			// Nobody was cut below the uid that just added, unless it
			// was that uid's own bound.
			if c < before[v] && v != uid && c < len(r.byUID[uid]) {
				t.Fatalf("add %d: uid %d cut to %d by uid %d, which holds %d", i, v, c, uid, len(r.byUID[uid]))
			}
		}
		if sum != r.n || len(r.byKey) != r.n {
			t.Fatalf("counts %d, entries %d, keys %d", sum, r.n, len(r.byKey))
		}
		r.mu.Unlock()
		// Every uid's newest recorded entry is still there.
		for v, p := range newest {
			if _, ok := r.refuses(false, p); !ok {
				t.Fatalf("add %d (uid %d): uid %d's newest entry (pid %d) was dropped", i, uid, v, p)
			}
		}
	}
	if refusedAdds == 0 {
		t.Fatal("the table never filled with single entries: the test shows nothing")
	}
}

// Without a pidfd (old kernels) an entry lasts noPidfdTTL.
func TestRefusalsNoPidfd(t *testing.T) {
	var r refusals
	r.add(false, 42, 1000, -1, 1)
	if _, ok := r.refuses(false, 42); !ok {
		t.Fatal("not refused")
	}
	r.mu.Lock()
	r.noFD[0].added = time.Now().Add(-noPidfdTTL - time.Second)
	r.mu.Unlock()
	if _, ok := r.refuses(false, 42); ok {
		t.Fatal("refused after the TTL")
	}
}

// SO_PEERPIDFD and the pidfd_open fallback name the connecting process.
func TestPeerPidfd(t *testing.T) {
	dir := t.TempDir()
	l, err := listenSeqpacket(filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: filepath.Join(dir, "s")}); err != nil {
		t.Fatal(err)
	}
	pidfd, exited := peerPidfd(fd, int32(os.Getpid()))
	if pidfd < 0 || exited {
		t.Fatalf("pidfd %d exited %v", pidfd, exited)
	}
	defer unix.Close(pidfd)
	flags, err := unix.FcntlInt(uintptr(pidfd), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("pidfd not close-on-exec: %#x %v", flags, err)
	}
	fdinfo, _ := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(pidfd))
	if !strings.Contains(string(fdinfo), "Pid:\t"+strconv.Itoa(os.Getpid())+"\n") {
		t.Fatalf("pidfd names another process:\n%s", fdinfo)
	}
}

// The bound in all leaves most descriptors to links: at most a quarter of
// RLIMIT_NOFILE, never more than maxRefused nor less than a uid's bound.
func TestRefusalsCapFollowsNofile(t *testing.T) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	want := min(max(int(lim.Cur/4), maxRefusedPerUID), maxRefused)
	if got := defaultCapAll(); got != want {
		t.Fatalf("bound in all %d with RLIMIT_NOFILE %d, want %d", got, lim.Cur, want)
	}
	var r refusals
	if u, a := r.bounds(); u != maxRefusedPerUID || a != want {
		t.Fatalf("a zero table's bounds: %d per uid, %d in all", u, a)
	}
	old := lim
	lim.Cur = 2000
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Skip("cannot lower RLIMIT_NOFILE:", err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
	if got := defaultCapAll(); got != maxRefusedPerUID {
		t.Fatalf("bound in all %d with RLIMIT_NOFILE 2000, want %d", got, maxRefusedPerUID)
	}
}

// fullTable is a table at its bound in all: 16 uids holding 1,024 live
// entries each.
func fullTable(b *testing.B) *refusals {
	r := &refusals{capUID: maxRefusedPerUID, capAll: maxRefused}
	self := os.Getpid()
	for i := 0; i < maxRefused; i++ {
		fd, err := unix.PidfdOpen(self, 0)
		if err != nil {
			b.Skip("no pidfd:", err)
		}
		r.add(false, int32(1000+i), uint32(i/maxRefusedPerUID), fd, 1)
	}
	b.Cleanup(r.closeAll)
	b.ResetTimer()
	return r
}

// A close when the table is full: the dead are pruned (none here) and a
// uid's oldest entry goes. The pidfd_open is counted too.
func BenchmarkRefusalsAddFull(b *testing.B) {
	r := fullTable(b)
	self := os.Getpid()
	for i := 0; i < b.N; i++ {
		fd, _ := unix.PidfdOpen(self, 0)
		r.add(false, int32(100000+i), 3, fd, 1)
	}
	b.StopTimer()
}

// Each seqpacket connection asks the table.
func BenchmarkRefusalsRefusesFull(b *testing.B) {
	r := fullTable(b)
	for i := 0; i < b.N; i++ {
		r.refuses(false, 5)
	}
	b.StopTimer()
}
