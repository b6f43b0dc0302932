package main

import (
	"encoding/binary"
	"testing"
)

// The message layouts the probe sends, against vhost-user.rst: a 12-byte
// header; a vring state is 8 bytes, a vring address 40, a memory table 8
// plus 32 per region.
func TestLayouts(t *testing.T) {
	m := msg(reqSetVringNum, flagVersion|flagNeedReply, vringState(1, 256))
	if len(m) != 12+8 {
		t.Fatalf("SET_VRING_NUM: %d bytes", len(m))
	}
	if r, f, s := binary.LittleEndian.Uint32(m), binary.LittleEndian.Uint32(m[4:]), binary.LittleEndian.Uint32(m[8:]); r != 8 || f != 0x9 || s != 8 {
		t.Fatalf("header request %d flags %#x size %d", r, f, s)
	}
	if n := len(vringAddr(1, 1, 2, 3)); n != 40 {
		t.Fatalf("vring address: %d bytes", n)
	}
	a := vringAddr(1, 0x10, 0x20, 0x30)
	if binary.LittleEndian.Uint64(a[8:]) != 0x10 || binary.LittleEndian.Uint64(a[16:]) != 0x20 || binary.LittleEndian.Uint64(a[24:]) != 0x30 {
		t.Fatalf("vring address order: desc, used, avail: % x", a)
	}
	tb := memTable([]region{{gpa: 1, size: 2, uaddr: 3, offset: 4}, {gpa: 5, size: 6, uaddr: 7, offset: 8}})
	if len(tb) != 8+2*32 || binary.LittleEndian.Uint32(tb) != 2 {
		t.Fatalf("memory table: %d bytes, nregions %d", len(tb), binary.LittleEndian.Uint32(tb))
	}
	for i, want := range []uint64{1, 2, 3, 4, 5, 6, 7, 8} {
		if got := binary.LittleEndian.Uint64(tb[8+8*i:]); got != want {
			t.Fatalf("memory table field %d: %d, want %d", i, got, want)
		}
	}
}

// The guest layout keeps the rings, the scratch area and the buffers
// apart and inside the memory.
func TestGuestLayout(t *testing.T) {
	type area struct {
		name       string
		start, end int
	}
	areas := []area{
		{"q0 desc", q0Desc, q0Desc + 16*queueSize},
		{"q0 avail", q0Avail, q0Avail + 6 + 2*queueSize},
		{"q0 used", q0Used, q0Used + 6 + 8*queueSize},
		{"q1 desc", q1Desc, q1Desc + 16*queueSize},
		{"q1 avail", q1Avail, q1Avail + 6 + 2*queueSize},
		{"q1 used", q1Used, q1Used + 6 + 8*queueSize},
		{"scratch", scratch, rxBufs},
		{"rx buffers", rxBufs, rxBufs + queueSize*rxBufSize},
		{"tx buffers", txBufs, txBufs + queueSize*txBufSize},
	}
	for i, a := range areas {
		if a.end > memSize {
			t.Errorf("%s ends at %#x, past the memory (%#x)", a.name, a.end, memSize)
		}
		for _, b := range areas[i+1:] {
			if a.start < b.end && b.start < a.end {
				t.Errorf("%s [%#x,%#x) overlaps %s [%#x,%#x)", a.name, a.start, a.end, b.name, b.start, b.end)
			}
		}
	}
	// 300 chained descriptors of the long-chain case fit in the scratch area.
	if scratch+300*16 > rxBufs {
		t.Errorf("the long-chain case's table does not fit in the scratch area")
	}
}
