package multilink

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"math/rand"
	"sort"
	"testing"
	"time"
)

const win = int64(time.Second)

func newTable() *dedup {
	d := newDedup(time.Second)
	d.allocate()
	return d
}

// numbered is a distinct frame of size bytes for each i.
func numbered(i, size int) []byte {
	f := frameOf(size, 0xaa)
	binary.BigEndian.PutUint64(f[size-8:], uint64(i))
	return f
}

// feed runs frames through d as one link's batch and returns those kept.
func feed(d *dedup, link uint64, now int64, frames ...[]byte) [][]byte {
	in := append([][]byte(nil), frames...)
	kept, dropped := d.filter(link, in, now)
	if len(kept)+dropped != len(frames) {
		panic("filter lost count")
	}
	return kept
}

func TestDedupDifferentLinkDropped(t *testing.T) {
	d := newTable()
	x := numbered(1, 60)
	if got := feed(d, 1, 0, x); len(got) != 1 {
		t.Fatal("the first copy was dropped")
	}
	if got := feed(d, 2, 1000, x); len(got) != 0 {
		t.Fatal("link 2's copy of link 1's frame reached the host")
	}
	// Whichever link is first: the other's copy is the duplicate.
	y := numbered(2, 60)
	if len(feed(d, 2, 2000, y)) != 1 || len(feed(d, 1, 3000, y)) != 0 {
		t.Fatal("link 1's late copy of link 2's frame: want it dropped")
	}
}

func TestDedupSameLinkRepeatsKept(t *testing.T) {
	d := newTable()
	x := numbered(1, 60)
	if got := feed(d, 1, 0, x, x, x); len(got) != 3 {
		t.Fatalf("a link's own repeats: %d of 3 kept", len(got))
	}
	if got := feed(d, 1, 10, x); len(got) != 1 {
		t.Fatal("a repeat in a later batch was dropped")
	}
}

// A repeat the far host sent during the overlap comes over both links: the
// host gets each repeat once, in whatever order the copies arrive.
func TestDedupRepeatsOverBothLinks(t *testing.T) {
	orders := [][]uint64{{1, 2, 1, 2, 1, 2}, {1, 1, 1, 2, 2, 2}, {2, 1, 1, 2, 2, 1}, {2, 2, 2, 1, 1, 1}}
	for _, order := range orders {
		d := newTable()
		x := numbered(7, 100)
		kept := 0
		for i, l := range order {
			kept += len(feed(d, l, int64(i), x))
		}
		if kept != 3 {
			t.Errorf("order %v: host got %d copies, want the 3 the far host sent", order, kept)
		}
	}
}

func TestDedupThreeLinks(t *testing.T) {
	d := newTable()
	x := numbered(1, 60)
	kept := len(feed(d, 1, 0, x)) + len(feed(d, 2, 1, x)) + len(feed(d, 3, 2, x))
	if kept != 1 {
		t.Fatalf("three links, one frame each: host got %d", kept)
	}
	// Link 2 carries a repeat the others lost: the host gets it.
	kept = len(feed(d, 2, 3, x)) + len(feed(d, 3, 4, x)) + len(feed(d, 1, 5, x))
	if kept != 1 {
		t.Fatalf("the second round: host got %d, want 1", kept)
	}
	// A fourth and fifth link: counted, and past what an entry counts, delivered.
	if len(feed(d, 4, 6, x)) != 0 {
		t.Fatal("a fourth link's copy reached the host")
	}
	if len(feed(d, 5, 7, x)) != 1 {
		t.Fatal("a fifth link, not counted, must be delivered (unsure: deliver)")
	}
}

// Link 1 loses some frames (its far queue was full), link 2 carries all;
// they arrive interleaved and each late by its own delay. Every frame
// reaches the host once.
func TestDedupLossyLink(t *testing.T) {
	for _, lossy := range []uint64{1, 2} {
		d := newTable()
		rng := rand.New(rand.NewSource(int64(lossy)))
		type arrival struct {
			link uint64
			at   int64
			i    int
		}
		var arr []arrival
		const n = 2000
		for i := 0; i < n; i++ {
			sent := int64(i) * int64(time.Millisecond) / 10
			for _, l := range []uint64{1, 2} {
				if l == lossy && i%3 == 0 {
					continue
				}
				arr = append(arr, arrival{l, sent + rng.Int63n(int64(20*time.Millisecond)), i})
			}
		}
		sort.SliceStable(arr, func(i, j int) bool { return arr[i].at < arr[j].at })
		got := make([]int, n)
		for _, a := range arr {
			for range feed(d, a.link, a.at, numbered(a.i, 80)) {
				got[a.i]++
			}
		}
		for i, c := range got {
			if c != 1 {
				t.Fatalf("lossy link %d: frame %d reached the host %d times", lossy, i, c)
			}
		}
	}
}

func TestDedupExpiry(t *testing.T) {
	d := newTable()
	x, y := numbered(1, 60), numbered(2, 60)
	feed(d, 1, 0, x, y)
	if len(feed(d, 2, win, y)) != 0 {
		t.Fatal("a copy at exactly the window was delivered")
	}
	if len(feed(d, 2, win+1, x)) != 1 {
		t.Fatal("a copy after the window was dropped")
	}
	// That one started a new entry: link 1's copy is now its duplicate.
	if len(feed(d, 1, win+2, x)) != 0 {
		t.Fatal("the new entry did not take")
	}
}

// Broadcast: an ARP request reaches us over both links, and its retry a
// second later too. The host sees the request and the retry, once each.
func TestDedupBroadcast(t *testing.T) {
	d := newTable()
	arp := append(bytes.Repeat([]byte{0xff}, 6), numbered(1, 54)[6:]...)
	arp[12], arp[13] = 0x08, 0x06
	kept := len(feed(d, 1, 0, arp)) + len(feed(d, 2, int64(time.Millisecond), arp))
	retry := int64(time.Second) + 1
	kept += len(feed(d, 2, retry, arp)) + len(feed(d, 1, retry+int64(time.Millisecond), arp))
	if kept != 2 {
		t.Fatalf("an ARP request and its retry over two links: host got %d, want 2", kept)
	}
}

// Frames that differ in one byte, or in length only, are not duplicates.
func TestDedupNearlyIdenticalKept(t *testing.T) {
	d := newTable()
	x := numbered(1, 1500)
	feed(d, 1, 0, x)
	y := bytes.Clone(x)
	y[700] ^= 1
	z := x[:1499]
	w := append(bytes.Clone(x), 0)
	if got := feed(d, 2, 1, y, z, w); len(got) != 3 {
		t.Fatalf("frames that are not the same: %d of 3 kept", len(got))
	}
}

// A hash match is not enough: bytes decide. An entry is planted with the
// hash and the length of a frame but other bytes.
func TestDedupHashMatchIsNotADuplicate(t *testing.T) {
	d := newTable()
	x, y := numbered(1, 200), numbered(2, 200)
	feed(d, 1, 0, x)
	h := maphash.Bytes(d.seed, y)
	bi := int(h % uint64(len(d.buckets)))
	for j := range dedupWays {
		if d.buckets[bi].until[j] == 0 {
			d.buckets[bi].hash[j], d.buckets[bi].until[j] = h, win
			d.entries[bi*dedupWays+j] = dedupEntry{pos: 0, size: 200, delivered: 1} // x's bytes
			d.entries[bi*dedupWays+j].link[0], d.entries[bi*dedupWays+j].count[0] = 1, 1
			break
		}
	}
	if len(feed(d, 2, 1, y)) != 1 {
		t.Fatal("a frame with another frame's hash and length, other bytes, was dropped")
	}
}

func TestDedupJumbo(t *testing.T) {
	d := newTable()
	kept := 0
	// Enough of them to wrap the ring a few times: copies still match
	// whole frames.
	for i := 0; i < 3*dedupRingBytes/MaxFrame; i++ {
		f := numbered(i, MaxFrame-i%7)
		kept += len(feed(d, 1, int64(i), f))
		kept += len(feed(d, 2, int64(i), f))
	}
	if want := 3 * dedupRingBytes / MaxFrame; kept != want {
		t.Fatalf("jumbo frames over two links: host got %d, want %d", kept, want)
	}
}

// A flood of distinct frames: the table stays its size, the early frames'
// entries are lost (their late copies reach the host) and no frame that was
// not a copy is ever dropped.
func TestDedupFloodLosesSuppressionNeverFrames(t *testing.T) {
	for _, size := range []int{64, 1500, MaxFrame} {
		d := newTable()
		buckets, entries, ring := &d.buckets[0], &d.entries[0], &d.ring[0]
		const n = 4 * dedupEntries
		for i := 0; i < n; i++ {
			if len(feed(d, 1, int64(i), numbered(i, size))) != 1 {
				t.Fatalf("size %d: distinct frame %d dropped", size, i)
			}
		}
		if &d.buckets[0] != buckets || &d.entries[0] != entries || &d.ring[0] != ring ||
			len(d.buckets)*dedupWays != dedupEntries || len(d.entries) != dedupEntries || len(d.ring) != dedupRingBytes {
			t.Fatal("the table grew or moved")
		}
		// The first frames were evicted or overwritten: their copies go
		// through (suppression lost). The last ones are still known.
		if len(feed(d, 2, n, numbered(0, size))) != 1 {
			t.Fatalf("size %d: a copy of an evicted frame was dropped", size)
		}
		if len(feed(d, 2, n, numbered(n-1, size))) != 0 {
			t.Fatalf("size %d: the newest frame was forgotten", size)
		}
	}
}

// An attacker flooding from one link cannot make the table drop another
// link's distinct frames, whatever it sends.
func TestDedupFloodFromBothLinks(t *testing.T) {
	d := newTable()
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 100000; i++ {
		l := uint64(1 + i%2)
		f := numbered(i, 14+rng.Intn(200))
		if len(feed(d, l, int64(i)*1000, f)) != 1 {
			t.Fatalf("distinct frame %d from link %d dropped", i, l)
		}
	}
}

// dedup at the multilink: two links carrying the same frames.
func TestMultilinkDedup(t *testing.T) {
	for _, on := range []bool{true, false} {
		var opts []Option
		if !on {
			opts = append(opts, Dedup(0))
		}
		m := New(testLog(), opts...)
		hc := newFakeConn()
		h, _ := m.AttachHost(PeerInfo{}, hc, nil)
		ac, bc := newFakeConn(), newFakeConn()
		a, _ := addLink(m, PeerInfo{}, ac, nil)
		b, _ := addLink(m, PeerInfo{}, bc, nil)
		const n = 200
		for i := 0; i < n; i++ {
			ac.in <- numbered(i, 100)
			bc.in <- numbered(i, 100)
		}
		ac.in <- frameOf(60, 1) // twice over link a, once over b: twice to the host
		ac.in <- frameOf(60, 1)
		bc.in <- frameOf(60, 1)
		eventually(t, "all read", func() bool { return a.Counters().RxPackets == n+2 && b.Counters().RxPackets == n+1 })
		want, dups, repeats := n+2, n+1, 2
		if !on {
			want, dups, repeats = 2*n+3, 0, 3
		}
		eventually(t, "the host's frames", func() bool { return int(h.Counters().TxPackets)+int(m.Totals().DupDropped) == 2*n+3 })
		got := hc.sentFrames()
		seen := map[string]int{}
		for _, f := range got {
			seen[string(f)]++
		}
		if len(got) != want || seen[string(frameOf(60, 1))] != repeats {
			t.Errorf("dedup %v: host got %d frames (want %d), the repeated one %d times", on, len(got), want, seen[string(frameOf(60, 1))])
		}
		if d := a.Counters().RxDupDropped + b.Counters().RxDupDropped; d != uint64(dups) || m.Totals().DupDropped != uint64(dups) {
			t.Errorf("dedup %v: rx_dup_dropped %d+%d, dup_dropped %d, want %d", on, a.Counters().RxDupDropped, b.Counters().RxDupDropped, m.Totals().DupDropped, dups)
		}
		m.Close()
	}
}

// With one link the table is not looked up: a link's frames all reach the
// host, repeats too, and are only recorded.
func TestMultilinkDedupOneLink(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	hc := newFakeConn()
	m.AttachHost(PeerInfo{}, hc, nil)
	ac := newFakeConn()
	addLink(m, PeerInfo{}, ac, nil)
	for i := 0; i < 10; i++ {
		ac.in <- frameOf(60, 3)
	}
	eventually(t, "ten frames", func() bool { return len(hc.sentFrames()) == 10 })
	m.Host().out.Lock()
	defer m.Host().out.Unlock()
	if m.dd.histN != 10 || m.dd.buckets[0] != (dedupBucket{}) {
		t.Fatalf("one link: %d frames recorded (want 10)", m.dd.histN)
	}
	for _, b := range m.dd.buckets {
		if b != (dedupBucket{}) {
			t.Fatal("one link: the table has entries")
		}
	}
}

// The new path's first frames are copies of what the old link delivered
// just before the new one reached us: recorded while the old one was
// alone, they are known when the second link opens.
func TestMultilinkDedupNewPathsBacklog(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	hc := newFakeConn()
	h, _ := m.AttachHost(PeerInfo{}, hc, nil)
	oc := newFakeConn()
	addLink(m, PeerInfo{}, oc, nil)
	for i := 0; i < 10; i++ {
		oc.in <- numbered(i, 100)
	}
	oc.in <- frameOf(60, 5) // a repeat of the old link's own, twice
	oc.in <- frameOf(60, 5)
	eventually(t, "the old link's frames", func() bool { return len(hc.sentFrames()) == 12 })
	nc := newFakeConn()
	nl, _ := addLink(m, PeerInfo{}, nc, nil)
	for i := 0; i < 10; i++ {
		nc.in <- numbered(i, 100) // the backlog: copies
	}
	nc.in <- frameOf(60, 5)
	nc.in <- frameOf(60, 5)
	nc.in <- frameOf(60, 5) // a third: the old link carried two
	nc.in <- numbered(10, 100)
	eventually(t, "the new link's frames read", func() bool { return nl.Counters().RxPackets == 14 })
	eventually(t, "the new link's frames handled", func() bool { return h.Counters().TxPackets+nl.Counters().RxDupDropped == 26 })
	if d := nl.Counters().RxDupDropped; d != 12 {
		t.Fatalf("the new link's backlog: %d dropped, want the 12 copies", d)
	}
	got := hc.sentFrames()
	if len(got) != 14 || !bytes.Equal(got[12], frameOf(60, 5)) || !bytes.Equal(got[13], numbered(10, 100)) {
		t.Fatalf("host got %d frames, want 12 + the third repeat + the new frame", len(got))
	}
}

// TestDedupReplayWindow: what the sole link delivered is taken in at the
// replay as delivered then, if it is no older than histAge: a new path's
// set-up (an ssh login) can hold its first copies longer than a window,
// and they come out once it is up.
func TestDedupReplayWindow(t *testing.T) {
	d := newTable()
	age := int64(histAge)
	x, y, z := numbered(1, 60), numbered(2, 60), numbered(7, 60)
	d.record(1, [][]byte{x}, 0)
	d.record(1, [][]byte{y}, age/2)
	d.record(1, [][]byte{z}, age-win)
	d.replay(age + 1) // x is older than histAge; y and z are not, though older than a window
	if len(feed(d, 2, age+1, x)) != 1 {
		t.Fatal("a copy of a frame recorded longer than histAge ago was dropped")
	}
	if len(feed(d, 2, age+win/2, y)) != 0 {
		t.Fatal("a copy, within a window of the replay, of a frame recorded before was delivered")
	}
	if len(feed(d, 2, age+1+win+1, z)) != 1 {
		t.Fatal("a copy more than a window after the replay was dropped")
	}
	// Another sole link's records start afresh: link 1's are not its.
	d.record(3, [][]byte{numbered(3, 60)}, 3*age)
	d.record(4, [][]byte{numbered(4, 60)}, 3*age+1)
	d.replay(3*age + 2)
	if len(feed(d, 5, 3*age+3, numbered(3, 60))) != 1 || len(feed(d, 5, 3*age+3, numbered(4, 60))) != 0 {
		t.Fatal("replay took the records of a link that was not the last sole one")
	}
}

// The old link closes; the new one, slower, still brings copies of what the
// old one delivered: dropped for a window after, and not later.
func TestMultilinkDedupAfterClose(t *testing.T) {
	const w = 200 * time.Millisecond
	m := New(testLog(), Dedup(w))
	defer m.Close()
	hc := newFakeConn()
	h, _ := m.AttachHost(PeerInfo{}, hc, nil)
	oc, nc := newFakeConn(), newFakeConn()
	old, _ := addLink(m, PeerInfo{}, oc, nil)
	nl, _ := addLink(m, PeerInfo{}, nc, nil)
	oc.in <- numbered(1, 100)
	oc.in <- numbered(2, 100)
	eventually(t, "old link's frames", func() bool { return len(hc.sentFrames()) == 2 })
	old.Close()
	nc.in <- numbered(1, 100)
	eventually(t, "late copy read", func() bool { return nl.Counters().RxPackets == 1 })
	eventually(t, "late copy counted", func() bool { return nl.Counters().RxDupDropped == 1 })
	time.Sleep(w + 50*time.Millisecond)
	nc.in <- numbered(2, 100)
	eventually(t, "a copy after the window", func() bool { return len(hc.sentFrames()) == 3 })
	if h.Counters().TxPackets != 3 || m.Totals().DupDropped != 1 {
		t.Fatalf("host tx_packets %d, dup_dropped %d; want 3, 1", h.Counters().TxPackets, m.Totals().DupDropped)
	}
	if m.dedupActive(mono()) {
		t.Fatal("the table still in use with one link, past the window")
	}
}

func TestIdle(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	hc := newFakeConn()
	h, _ := m.AttachHost(PeerInfo{}, hc, nil)
	ac := newFakeConn()
	a, _ := addLink(m, PeerInfo{}, ac, nil)
	time.Sleep(30 * time.Millisecond)
	if i := a.Idle(); i < 30*time.Millisecond || i > 5*time.Second {
		t.Fatalf("a link with no frame yet: idle %v, want the time since it joined", i)
	}
	sent := time.Now()
	ac.in <- frameOf(60, 1)
	eventually(t, "the frame", func() bool { return a.Counters().RxPackets == 1 })
	// Bounded by the time since the frame was sent, not by a fixed figure
	// a loaded machine could pass between the two lines.
	if i, since := a.Idle(), time.Since(sent); i > since {
		t.Fatalf("idle %v, but the frame was sent %v ago", i, since)
	}
	if i := h.Idle(); i < 30*time.Millisecond {
		t.Fatalf("the quiet host: idle %v", i)
	}
}

// send runs frames through d as link's batch to a host that accepts the
// first k of those kept (k < 0: all), and returns those it accepted.
func send(d *dedup, link uint64, now int64, k int, frames ...[]byte) [][]byte {
	kept, _ := d.filter(link, append([][]byte(nil), frames...), now)
	if k < 0 || k > len(kept) {
		k = len(kept)
	}
	if k < len(kept) {
		d.unsent(k)
	}
	return kept[:k]
}

// A copy the host did not accept is not delivered: the next copy, from any
// link, goes through. It stays counted as one its link carried, so that
// link's next copy is its next repeat.
func TestDedupUnsent(t *testing.T) {
	d := newTable()
	x, y, z := numbered(1, 60), numbered(2, 60), numbered(3, 60)
	// Link 1: x, y, x (a repeat of its own) and z; the host takes x only.
	if got := send(d, 1, 0, 1, x, y, x, z); len(got) != 1 || !bytes.Equal(got[0], x) {
		t.Fatalf("the host took %d frames, want x", len(got))
	}
	// Link 2 brings the same four: x is the duplicate of the one the host
	// took; y, its second x and z go, as the host never got them.
	got := send(d, 2, 1, -1, x, y, x, z)
	if len(got) != 3 || !bytes.Equal(got[0], y) || !bytes.Equal(got[1], x) || !bytes.Equal(got[2], z) {
		t.Fatalf("link 2's copies: the host got %d, want y, x, z", len(got))
	}
	// Link 1's third x: two were delivered, it goes. Link 2's third is
	// then a duplicate.
	if got := send(d, 1, 2, -1, x); len(got) != 1 {
		t.Fatal("link 1's third x (two were delivered) was dropped")
	}
	if got := send(d, 2, 3, -1, x); len(got) != 0 {
		t.Fatal("link 2's third x (three were delivered) reached the host")
	}
	// A host that takes nothing: nothing counts as delivered, whoever
	// sends and however often. Each link carried w twice; the host gets
	// the copies one link carried most, three, as they come.
	w := numbered(4, 60)
	for l := uint64(1); l <= 3; l++ {
		if got := send(d, l, 4, 0, w, w); len(got) != 0 {
			t.Fatal("a host that takes nothing got something")
		}
	}
	for i, l := range []uint64{2, 1, 3} {
		if got := send(d, l, int64(5+i), -1, w); len(got) != 1 {
			t.Fatalf("link %d's third w, %d delivered, was dropped", l, i)
		}
	}
	// The rule as ever: link 2's fourth goes, link 1's fourth then is
	// the duplicate.
	if len(send(d, 2, 8, -1, w)) != 1 || len(send(d, 1, 9, -1, w)) != 0 {
		t.Fatal("the fourth copies: want link 2's delivered, link 1's dropped")
	}
}

// Three links carry one stream, each losing some frames on its way, in
// batches of random size; the host takes a random part of each batch. At
// no time is a copy dropped as a duplicate unless the host accepted a copy
// of that frame: PRP's rule, never reject a frame the host has not got.
func TestDedupNeverDropsAFrameTheHostLacks(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	d := newTable()
	const n = 20000
	accepted := make([]int, n)
	next := [3]int{}
	now := int64(0)
	for next[0] < n || next[1] < n || next[2] < n {
		l := rng.Intn(3)
		if next[l] >= n {
			continue
		}
		var batch [][]byte
		var seqs []int
		for len(batch) < 1+rng.Intn(BatchSize) && next[l] < n {
			if rng.Intn(10) != 0 { // this link lost one in ten
				batch = append(batch, numbered(next[l], 64+next[l]%50))
				seqs = append(seqs, next[l])
			}
			next[l]++
		}
		if len(batch) == 0 {
			continue
		}
		now += int64(time.Millisecond)
		in := append([][]byte(nil), batch...)
		kept, _ := d.filter(uint64(l+1), in, now)
		k := len(kept)
		if rng.Intn(3) == 0 { // a host often full
			k = rng.Intn(len(kept) + 1)
		}
		if k < len(kept) {
			d.unsent(k)
		}
		// Match kept frames to the batch by identity: filter keeps order.
		j := 0
		for i, f := range batch {
			if j < len(kept) && &kept[j][0] == &f[0] {
				if j < k {
					accepted[seqs[i]]++
				}
				j++
				continue
			}
			if accepted[seqs[i]] == 0 {
				t.Fatalf("link %d's copy of frame %d dropped as a duplicate, the host has none", l+1, seqs[i])
			}
		}
	}
	// Duplicates only where the table forgot (an entry evicted from a
	// full bucket, past the window): suppression lost now and then.
	twice := 0
	for _, a := range accepted {
		if a > 1 {
			twice++
		}
	}
	if twice > n/200 {
		t.Fatalf("%d of %d frames reached the host more than once", twice, n)
	}
}
