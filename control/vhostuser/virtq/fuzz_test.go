package virtq

import (
	"encoding/binary"
	"testing"
	"unsafe"
)

// aligned returns n zero bytes whose address is 8-aligned.
func aligned(n int) []byte {
	w := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), n)[:n:n]
}

const (
	fuzzMem   = 16 << 10
	fuzzGuest = 0x10000
	fuzzUser  = 0x7f0000000000
)

// fuzzRing builds guest memory from data (two adjacent regions, so that
// buffers may span them) and a ring whose size, addresses and base come
// from data's first bytes; nil if they are refused.
func fuzzRing(data []byte) (*Ring, *Memory) {
	if len(data) < 16 {
		return nil, nil
	}
	p := data[:16]
	body := aligned(fuzzMem)
	copy(body, data[16:])
	half := fuzzMem / 2
	mem, err := NewMemory([]Region{
		{GuestAddr: fuzzGuest, UserAddr: fuzzUser, Data: body[:half:half]},
		{GuestAddr: fuzzGuest + uint64(half), UserAddr: fuzzUser + uint64(half), Data: body[half:]},
	})
	if err != nil {
		panic(err)
	}
	num := uint32(1) << (p[0] % 9) // 1..256
	if p[0]&0x80 != 0 {
		num = uint32(p[0]) // not a power of 2 sometimes: refused
	}
	off := func(b []byte) uint64 { return uint64(binary.LittleEndian.Uint16(b)) % (fuzzMem + 64) }
	var r Ring
	if err := r.Setup(mem, num, fuzzUser+off(p[1:])&^15, fuzzUser+off(p[3:])&^1, fuzzUser+off(p[5:])&^3,
		binary.LittleEndian.Uint16(p[7:]), p[9]&1 != 0); err != nil {
		return nil, nil
	}
	return &r, mem
}

// FuzzWalker feeds the rings and chains arbitrary guest memory and
// indices: TakeFrame and PutFrame must never panic (an access outside
// the regions would), must give back what they take, and never report
// more used entries than the ring holds.
func FuzzWalker(f *testing.F) {
	// A valid transmit ring of 4: desc at 0, avail at 64, used at 128,
	// one chain: header+60 bytes at 1024 then an indirect table.
	seed := make([]byte, 16+2048)
	seed[0] = 2 // num 4
	binary.LittleEndian.PutUint16(seed[1:], 0)
	binary.LittleEndian.PutUint16(seed[3:], 64)
	binary.LittleEndian.PutUint16(seed[5:], 128)
	seed[9] = 1
	m := seed[16:]
	putDesc := func(table, i int, addr uint64, n uint32, flags, next uint16) {
		d := m[table+16*i:]
		binary.LittleEndian.PutUint64(d, addr)
		binary.LittleEndian.PutUint32(d[8:], n)
		binary.LittleEndian.PutUint16(d[12:], flags)
		binary.LittleEndian.PutUint16(d[14:], next)
	}
	putDesc(0, 0, fuzzGuest+1024, 72, descNext, 1)
	putDesc(0, 1, fuzzGuest+512, 32, descIndirect, 0)
	putDesc(512, 0, fuzzGuest+1100, 100, descWrite|descNext, 1)
	putDesc(512, 1, fuzzGuest+1300, 100, descWrite, 0)
	binary.LittleEndian.PutUint16(m[64+2:], 3) // avail idx
	binary.LittleEndian.PutUint16(m[64+4:], 0)
	binary.LittleEndian.PutUint16(m[64+6:], 1)
	binary.LittleEndian.PutUint16(m[64+8:], 0)
	f.Add(seed)
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, _ := fuzzRing(data)
		if r == nil {
			return
		}
		buf := make([]byte, 9235)
		frame := make([]byte, 1500)
		for i := 0; i < int(r.num)+2; i++ {
			before := r.usedIdx
			_, ok, err := r.TakeFrame(buf, 12)
			if !ok {
				if err == nil && r.usedIdx != before {
					t.Fatal("used entry without a take")
				}
				break
			}
			if r.usedIdx != before+1 {
				t.Fatalf("took one, used moved %d", r.usedIdx-before)
			}
			r.Publish()
			r.EnableNotify()
			r.DisableNotify()
		}
		for i := 0; i < int(r.num)+2; i++ {
			before := r.usedIdx
			ok, err := r.PutFrame(frame[:60+i*97%1440], 12, i%2 == 0)
			if !ok && err == nil && r.usedIdx != before {
				t.Fatal("used entries left by a frame that did not go")
			}
			if uint16(r.usedIdx-r.published) > uint16(r.num) {
				t.Fatalf("%d used entries pending in a ring of %d", r.usedIdx-r.published, r.num)
			}
			if !ok && err == nil {
				break
			}
			r.Publish()
		}
	})
}
