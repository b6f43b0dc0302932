package virtq

import (
	"encoding/binary"
	"testing"
)

// benchRing is a ring of 256 in 1 MiB of guest memory whose descriptors
// each point at a 2 KiB buffer, all offered; the bench plays the driver
// by offering them again.
func benchRing(b *testing.B, write bool) (*Ring, []byte) {
	const num = 256
	mem := aligned(1 << 20)
	m, err := NewMemory([]Region{{GuestAddr: fuzzGuest, UserAddr: fuzzUser, Data: mem}})
	if err != nil {
		b.Fatal(err)
	}
	var r Ring
	if err := r.Setup(m, num, fuzzUser, fuzzUser+4096, fuzzUser+8192, 0, true); err != nil {
		b.Fatal(err)
	}
	flags := uint16(0)
	if write {
		flags = descWrite
	}
	for i := 0; i < num; i++ {
		d := mem[16*i:]
		binary.LittleEndian.PutUint64(d, fuzzGuest+65536+uint64(i)*2048)
		binary.LittleEndian.PutUint32(d[8:], 2048)
		binary.LittleEndian.PutUint16(d[12:], flags)
		if !write {
			binary.LittleEndian.PutUint32(d[8:], 12+64)
		}
	}
	return &r, mem
}

// offer makes n more entries available, heads in order.
func offer(r *Ring, mem []byte, n int) {
	idx := binary.LittleEndian.Uint16(mem[4096+2:])
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint16(mem[4096+4+2*int((idx+uint16(i))&r.mask):], (idx+uint16(i))&r.mask)
	}
	binary.LittleEndian.PutUint16(mem[4096+2:], idx+uint16(n))
}

func BenchmarkPutFrame64(b *testing.B) {
	r, mem := benchRing(b, true)
	frame := make([]byte, 64)
	offer(r, mem, 256)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if ok, err := r.PutFrame(frame, 12, true); !ok || err != nil {
			b.Fatal(ok, err)
		}
		if i%32 == 31 {
			r.Publish()
			offer(r, mem, 32)
		}
	}
}

func BenchmarkTakeFrame64(b *testing.B) {
	r, mem := benchRing(b, false)
	buf := make([]byte, 9235)
	offer(r, mem, 256)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if n, ok, err := r.TakeFrame(buf, 12); !ok || err != nil || n != 64 {
			b.Fatal(n, ok, err)
		}
		if i%32 == 31 {
			r.Publish()
			offer(r, mem, 32)
		}
	}
}
