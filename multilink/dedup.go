package multilink

import (
	"bytes"
	"hash/maphash"
	"time"
)

// Duplicate suppression towards the host.
//
// During a hand-off two links reach the same far multilink, which sends
// every frame to both: without suppression the host gets each one twice.
// The table below remembers the frames that came within the last window,
// how many copies of each every link carried and how many the host
// accepted, and drops a copy that came over another link once the host
// has as many as that link brought.
//
// Only a copy the host accepted counts as delivered. A copy dropped
// towards the host (its socket full: the host's tx_dropped) is not: the
// next copy of that frame, from whichever link, goes through. The rule is
// PRP's (IEC 62439-3) for its duplicate discard: never reject a frame the
// host has not had; a duplicate now and then is tolerated. So filter
// decides against what the host has taken and counts what it keeps as
// delivered; the host's port sends it; what the host did not take (the
// tail of the batch past the k it accepted) unsent takes back. With one
// link open, record keeps only what the host took. No transport queues
// towards the host after the send (package conn's contract: a frame counted
// as sent is one the peer accepted), so "accepted" is final.
//
// The rule, per content (the frame's exact bytes): the host gets as many
// copies as the one link that carried the most of them within the window.
// A link's n-th copy (counting every copy it carried, accepted or not) is
// delivered only if fewer than n copies have been accepted. So
//
//   - the overlap's duplicate (A's copy delivered, then B's: B has 1, 1 was
//     delivered) is dropped, whichever link is faster;
//   - the host stalled while A's copy came (dropped towards it), then
//     B's: B has 1, none was delivered: B's goes through;
//   - a sender's own repeats (ARP retries, a gratuitous ARP sent three
//     times, a retransmit identical to the original) come over every link,
//     so the leading link delivers each, and the others' copies of them are
//     dropped: the host sees the repeats exactly as the far host sent them;
//   - a link that lost a frame (its queue at the far side was full) delivers
//     nothing for it, and the other link's copy is the first: delivered;
//   - three or more links: the same, every link counts its own copies.
//
// What the rule cannot tell apart, and what it then does:
//
//   - a repeat sent while only A was open and the next one while only B
//     is (A closed in between), within the window, looks exactly like B's
//     late copy of A's frame, which is the overlap's very case, so it is
//     dropped. The sender repeats again (it had had no answer), and that
//     copy counts as B's second. TCP retransmissions of Linux differ from
//     the original anyway (the timestamp option, the IP id), so they are
//     never taken for duplicates.
//   - whose copy is the frame: any link may send a frame's bytes before
//     another does, and then the host gets that link's copy and the
//     other's is the duplicate. Links are trusted with Ethernet (any of
//     them can send the host any frame), so this gives a link nothing it
//     did not have; what no link can do is make the host miss a frame it
//     never got, by having its own copy refused first.
//
// Bytes, not hashes, decide: a wrong drop is a lost frame, and a 64-bit
// hash, however keyed, can collide. The table keeps a copy of each frame it
// remembers in a ring of dedupRingBytes, and a match is a full comparison.
// The hash (maphash, with a seed drawn at random for each table, so that
// no peer can aim frames at one bucket) only finds the candidates.
//
// With one link open nothing is looked up; the link's latest frames the
// host took are copied aside (record), for the moment a second link opens
// (replay): see the hist fields. That copy is what one link costs, and
// dedup=off saves.
//
// Memory is fixed: dedupEntries entries of 72 bytes (1.1 MiB with their
// buckets), the ring, and histBytes with their list (histFrames entries of
// 24 bytes), allocated when the first link joins. An entry lives a window
// from its first copy; a new frame takes a free or expired slot of its
// bucket, or evicts the bucket's oldest. Under a flood of distinct frames
// entries are evicted before their window ends, and the ring overwrites
// their bytes: their copies are no longer recognised and reach the host.
// Suppression is lost, never a frame: nothing is dropped unless the host
// accepted a copy of its bytes and the table still has them.
//
// A dedup is used under one lock only, the host port's out lock: every
// link's delivery to the host takes it, so the table needs no lock of its
// own. A new host's sends start only after the old host's have ended
// (remove runs after the old port is marked closed under that lock).
type dedup struct {
	window  int64 // ns
	seed    maphash.Seed
	buckets []dedupBucket // dedupEntries/dedupWays
	entries []dedupEntry  // dedupEntries: bucket i's are i*dedupWays on
	ring    []byte        // dedupRingBytes: the remembered frames' bytes
	head    uint64        // where the next frame goes, counted from the start of time

	// While one link is open its latest frames are only copied into a
	// small ring of their own (histBytes, which stays in the cache) and
	// listed, not looked up: the first frames of a new path are often
	// copies of what the old link delivered just before the new one
	// reached us (vde_plug A = vde_plug B joins A, and B a moment later:
	// what A's side sent meanwhile waits in the pipe, 64 KiB at most).
	// The table takes them in (replay) when a second link opens.
	hbuf      []byte      // histBytes
	hhead     uint64      // as head, for hbuf
	hist      []histEntry // histFrames, a ring
	histN     uint64      // entries ever written
	histStart uint64      // the first not replayed yet
	histLink  uint64      // the link they came from

	// sent lists, for each frame the last filter kept, in order, the
	// entry it counted as delivered (-1: none), so that unsent can take
	// back what the host then did not accept.
	sent []int32
}

// The sole link's latest frames kept for a replay: what a new path's
// pipe or socket can hold before its far end joins, and more; and how old
// they may be: how long a new path may take to come up (multifs handoff's
// default --timeout).
const (
	histBytes  = 256 << 10
	histFrames = 4096
	histAge    = 30 * time.Second
)

// histEntry is one frame the sole link delivered.
type histEntry struct {
	pos  uint64 // in hbuf
	at   int64  // mono
	size uint16
}

// DefaultDedupWindow is the window when none is given: the largest
// difference in delay between two paths it covers.
const DefaultDedupWindow = time.Second

// MaxDedupWindow bounds the window an operator can ask for.
const MaxDedupWindow = time.Minute

// The table's fixed size, allocated when the first link joins.
const (
	dedupEntries   = 1 << 14 // frames remembered at most
	dedupWays      = 4       // entries per bucket
	dedupRingBytes = 8 << 20 // their bytes: 5,600 frames of 1,500 bytes, 900 jumbo ones
	dedupLinks     = 4       // links counted per frame; a fifth link's copy is delivered
)

// dedupBucket is what a lookup reads, one cache line: a frame that is not
// a copy (most are not) costs no more. A slot's entry is read only when
// its hash matches, and written when it is taken.
type dedupBucket struct {
	hash  [dedupWays]uint64
	until [dedupWays]int64 // when the slot's entry expires (mono); 0: free
}

type dedupEntry struct {
	pos       uint64             // the frame's bytes start here in the ring (see head)
	size      uint16             // the frame's length
	delivered uint16             // copies the host got
	count     [dedupLinks]uint16 // copies link[i] carried
	link      [dedupLinks]uint64
}

func newDedup(window time.Duration) *dedup {
	return &dedup{window: int64(window), seed: maphash.MakeSeed()}
}

// allocate makes the table's memory; once, before its first use.
func (d *dedup) allocate() {
	if d.entries == nil {
		d.buckets = make([]dedupBucket, dedupEntries/dedupWays)
		d.entries = make([]dedupEntry, dedupEntries)
		d.ring = make([]byte, dedupRingBytes)
		d.hbuf = make([]byte, histBytes)
		d.hist = make([]histEntry, histFrames)
		d.sent = make([]int32, 0, BatchSize)
	}
}

// filter removes from frames, in place, the duplicates of frames that came
// over other links, and counts the rest as delivered, all as having
// arrived from link from at now. It returns what is left and how many it
// removed. The host is to be sent what is left, in order; if it takes only
// the first k, unsent(k) must follow before the table is used again.
func (d *dedup) filter(from uint64, frames [][]byte, now int64) ([][]byte, int) {
	kept := frames[:0]
	d.sent = d.sent[:0]
	for _, f := range frames {
		if ei, dup := d.dup(from, f, now); !dup {
			kept = append(kept, f)
			d.sent = append(d.sent, ei)
		}
	}
	return kept, len(frames) - len(kept)
}

// unsent takes back what the last filter counted as delivered for the
// frames it kept from the k-th on: the host did not accept them (its
// socket was full), so they were not delivered, and the next copy of each,
// from whichever link, must go through. The copy stays counted as one its
// link carried (a repeat that link brings later is its next copy).
//
// The latest first: a later frame of the batch may have evicted the entry
// an earlier one counted on (its bucket full), and then left it with
// nothing delivered; the earlier one then has nothing to take back. The
// ring keeps the bytes, and an evicted entry stays evicted: suppression
// lost, never a frame.
func (d *dedup) unsent(k int) {
	for i := len(d.sent) - 1; i >= k; i-- {
		if ei := d.sent[i]; ei >= 0 && d.entries[ei].delivered > 0 {
			d.entries[ei].delivered--
		}
	}
	d.sent = d.sent[:0]
}

// dup reports whether frame, arriving from link from at now, is to be
// dropped, and counts it; if it is not, it also returns the index of the
// entry that counts it as delivered (-1: none).
func (d *dedup) dup(from uint64, frame []byte, now int64) (int32, bool) {
	if len(frame) > MaxFrame || len(frame) == 0 {
		return -1, false // Port.forward lets none through; never store one
	}
	h := maphash.Bytes(d.seed, frame)
	ei, b, bi, j := d.find(frame, h, now)
	if ei >= 0 {
		delivered, dup := d.entries[ei].copyFrom(from)
		if !delivered {
			ei = -1
		}
		return int32(ei), dup
	}
	d.insert(b, bi, j, h, d.store(frame), len(frame), from, now)
	return int32(bi*dedupWays + j), false
}

// find looks frame, of hash h, up at now: the index of its entry if the
// table has one, else -1 and the slot for it, j of bucket b (index bi): a
// free one, else the oldest.
func (d *dedup) find(frame []byte, h uint64, now int64) (ei int, b *dedupBucket, bi, j int) {
	bi = int(h % uint64(len(d.buckets)))
	b = &d.buckets[bi]
	for k := range dedupWays {
		u := b.until[k]
		if u != 0 && now > u {
			b.until[k], u = 0, 0 // expired
		}
		if u != 0 && b.hash[k] == h {
			// The bytes decide. Those of an entry the ring has
			// overwritten since are gone: no match.
			e := &d.entries[bi*dedupWays+k]
			if int(e.size) == len(frame) && e.pos+dedupRingBytes >= d.head &&
				bytes.Equal(d.ring[e.pos%dedupRingBytes:][:len(frame)], frame) {
				return bi*dedupWays + k, nil, 0, 0
			}
		}
		if v := b.until[j]; v != 0 && u < v {
			j = k
		}
	}
	return -1, b, bi, j
}

// copyFrom counts another copy of e's frame from link from and reports
// whether it counted it as delivered, and whether it is a duplicate. When
// unsure (no room to count a fifth link, a count at its limit) it lets
// the copy through, counting nothing.
func (e *dedupEntry) copyFrom(from uint64) (delivered, dup bool) {
	k := -1
	for i, l := range e.link {
		if l == from && e.count[i] > 0 {
			k = i
			break
		}
		if k < 0 && e.count[i] == 0 {
			k = i // the first free one, unless from has its own further on
		}
	}
	if k < 0 || e.count[k] == ^uint16(0) {
		return false, false
	}
	e.link[k] = from
	e.count[k]++
	if e.count[k] > e.delivered {
		// One more, not count[k]: a copy the host refused stays in its
		// link's count, and delivered is only what the host took.
		e.delivered++
		return true, false
	}
	return false, true
}

// store copies frame into the ring and returns where it went.
func (d *dedup) store(frame []byte) uint64 {
	n := uint64(len(frame))
	if off := d.head % dedupRingBytes; off+n > dedupRingBytes {
		d.head += dedupRingBytes - off // keep a frame's bytes in one piece
	}
	pos := d.head
	copy(d.ring[pos%dedupRingBytes:], frame)
	d.head += n
	return pos
}

// insert makes slot j of bucket b (index bi) the entry of a frame whose
// first copy, stored at pos, came from link from at t.
func (d *dedup) insert(b *dedupBucket, bi, j int, h, pos uint64, size int, from uint64, t int64) {
	b.hash[j], b.until[j] = h, t+d.window
	e := &d.entries[bi*dedupWays+j]
	*e = dedupEntry{pos: pos, size: uint16(size), delivered: 1}
	e.link[0], e.count[0] = from, 1
}

// record keeps the frames the sole link, from, delivered at now, for a
// replay: a copy and a list entry each, no lookup.
func (d *dedup) record(from uint64, frames [][]byte, now int64) {
	if from != d.histLink {
		d.histLink, d.histStart = from, d.histN
	}
	// Locals: this runs for every frame of a link that is alone.
	buf, hist, head, n := d.hbuf[:histBytes], d.hist[:histFrames], d.hhead, d.histN
	for _, f := range frames {
		size := uint64(len(f))
		if size > MaxFrame {
			continue
		}
		off := head % histBytes
		if off+size > histBytes {
			head += histBytes - off // keep a frame's bytes in one piece
			off = 0
		}
		copy(buf[off:off+size], f)
		hist[n%histFrames] = histEntry{pos: head, at: now, size: uint16(size)}
		head += size
		n++
	}
	d.hhead, d.histN = head, n
}

// replay puts what record kept, no older than histAge and still in the
// ring, into the table, in order, as first copies or as the link's own
// repeats; once, when the table comes into use (the first frame after a
// second link opened).
//
// Each is put in as if it had been delivered now, not when it was: what
// waits in a new path's pipe is what the far side sent while the path was
// being set up (an ssh login, a socat started), and that can take longer
// than any difference in delay between two working paths, which is all
// the window is for. Stamped at the replay, the copies that come out of
// the pipe once the path is up are recognised for a window from then.
func (d *dedup) replay(now int64) {
	first := d.histStart
	if d.histN-first > histFrames {
		first = d.histN - histFrames
	}
	for i := first; i < d.histN; i++ {
		e := d.hist[i%histFrames]
		if now-e.at > int64(histAge) || e.pos+histBytes < d.hhead {
			continue // too old for a path's set-up, or its bytes overwritten
		}
		f := d.hbuf[e.pos%histBytes:][:e.size]
		h := maphash.Bytes(d.seed, f)
		if ti, b, bi, j := d.find(f, h, now); ti >= 0 {
			d.entries[ti].copyFrom(d.histLink) // delivered: a repeat of its own
		} else {
			d.insert(b, bi, j, h, d.store(f), len(f), d.histLink, now)
		}
	}
	d.histStart = d.histN
}

// epoch is the zero of the multilink's clock: mono is time since epoch,
// monotonic, in ns, read once per batch.
var epoch = time.Now()

func mono() int64 { return int64(time.Since(epoch)) }
