// Package probeframe is the numbered test frame that test/vdeprobe and
// test/vhostprobe send and count, so that either can check what the
// other sent: a broadcast Ethernet header with a local experimental
// EtherType, a magic, the sequence number, then bytes that depend on it
// so that damage shows.
package probeframe

import (
	"encoding/binary"
	"fmt"
)

const (
	EtherType = 0x88b5 // IEEE local experimental: never a real protocol
	HdrLen    = 14     // the Ethernet header
	MinSize   = HdrLen + 4 + 8
)

var magic = [4]byte{'m', 'f', 'p', 'r'}

// Build fills buf (at least MinSize bytes) with frame seq and returns it.
// src, the last byte of the source MAC, tells the senders apart.
func Build(buf []byte, seq uint64, src byte) []byte {
	for i := 0; i < 6; i++ {
		buf[i] = 0xff
	}
	copy(buf[6:12], []byte{0x02, 0, 0, 0x6d, 0x66, src})
	binary.BigEndian.PutUint16(buf[12:], EtherType)
	copy(buf[HdrLen:], magic[:])
	binary.BigEndian.PutUint64(buf[HdrLen+4:], seq)
	for i := MinSize; i < len(buf); i++ {
		buf[i] = byte(seq) + byte(i)
	}
	return buf
}

// Check returns the seq of a test frame, whether b is one at all, and
// whether it is intact.
func Check(b []byte) (seq uint64, isProbe, intact bool) {
	if len(b) < MinSize || binary.BigEndian.Uint16(b[12:]) != EtherType || [4]byte(b[HdrLen:HdrLen+4]) != magic {
		return 0, false, false
	}
	seq = binary.BigEndian.Uint64(b[HdrLen+4:])
	for i := MinSize; i < len(b); i++ {
		if b[i] != byte(seq)+byte(i) {
			return seq, true, false
		}
	}
	return seq, true, true
}

// Tally counts the numbered frames (seq 0..count-1) a receiver gets.
type Tally struct {
	seen                            []uint32
	received, unique, dups, corrupt uint64
}

// NewTally expects frames 0..count-1.
func NewTally(count uint64) *Tally { return &Tally{seen: make([]uint32, count)} }

// Add counts one message of n bytes received into buf (n > len(buf): it
// was truncated). Other traffic (not a test frame) is ignored.
func (t *Tally) Add(buf []byte, n int) {
	if n > len(buf) {
		t.corrupt++
		return
	}
	seq, isProbe, intact := Check(buf[:n])
	if !isProbe {
		return
	}
	t.received++
	if !intact || seq >= uint64(len(t.seen)) {
		t.corrupt++
		return
	}
	if t.seen[seq] == 0 {
		t.unique++
	} else {
		t.dups++
	}
	t.seen[seq]++
}

// Complete says whether every frame has come.
func (t *Tally) Complete() bool { return t.unique == uint64(len(t.seen)) }

// Result prints the result line, received= unique= lost= dups= corrupt=,
// and fails if a frame was lost or damaged.
func (t *Tally) Result() error {
	lost := uint64(len(t.seen)) - t.unique
	fmt.Printf("received=%d unique=%d lost=%d dups=%d corrupt=%d\n", t.received, t.unique, lost, t.dups, t.corrupt)
	if lost != 0 || t.corrupt != 0 {
		return fmt.Errorf("%d lost, %d corrupt", lost, t.corrupt)
	}
	return nil
}
