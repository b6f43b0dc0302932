package main

// The hostile cases: what a malicious frontend (a QEMU run by another user)
// or the guest inside it can send. Each runs on a connection of its own.

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"multifs/control/client"
	"multifs/fsys/treeclient"
	"multifs/test/probeframe"
)

type hcase struct {
	what string
	// must: the backend must refuse the message (an error ack or the
	// connection ended); "closed": it must end the connection.
	must string
	run  func(path string) (outcome, detail string, err error)
}

var cases = map[string]hcase{}

func init() {
	// Memory tables.
	memCase := func(name, what string, table func(g *guestMem) ([]region, []int, func())) {
		cases[name] = hcase{what: what, must: "refuse", run: func(path string) (string, string, error) {
			c, g, err := negotiated(path)
			if err != nil {
				return "", "", err
			}
			defer c.close()
			defer g.free()
			rs, fds, done := table(g)
			if done != nil {
				defer done()
			}
			return judge(c, c.send(reqSetMemTable, memTable(rs), fds...))
		}}
	}
	one := func(r region) func(g *guestMem) ([]region, []int, func()) {
		return func(g *guestMem) ([]region, []int, func()) { return []region{r}, []int{g.fd}, nil }
	}
	memCase("mem-zero-size", "one region of size 0", one(region{gpa: guestBase, size: 0, uaddr: fakeVA}))
	memCase("mem-huge-size", "one region of 2^50 bytes over an 8 MiB memfd", one(region{gpa: guestBase, size: 1 << 50, uaddr: fakeVA}))
	memCase("mem-size-beyond-fd", "a region of 16 MiB over an 8 MiB memfd (touching the rest is SIGBUS)", one(region{gpa: guestBase, size: 16 << 20, uaddr: fakeVA}))
	memCase("mem-offset-beyond-fd", "mmap_offset 16 MiB into an 8 MiB memfd", one(region{gpa: guestBase, size: 4 << 20, uaddr: fakeVA, offset: 16 << 20}))
	memCase("mem-offset-unaligned", "mmap_offset not page-aligned", one(region{gpa: guestBase, size: 4 << 20, uaddr: fakeVA, offset: 100}))
	memCase("mem-gpa-wrap", "guest_phys_addr + size wraps around 2^64", one(region{gpa: ^uint64(0) - 4095, size: 8 << 20, uaddr: fakeVA}))
	memCase("mem-uaddr-wrap", "userspace_addr + size wraps around 2^64", one(region{gpa: guestBase, size: 8 << 20, uaddr: ^uint64(0) - 4095}))
	memCase("mem-no-fd", "one region and no fd", func(g *guestMem) ([]region, []int, func()) { return g.table(), nil, nil })
	memCase("mem-fd-mismatch", "two regions and one fd", func(g *guestMem) ([]region, []int, func()) {
		return []region{{gpa: guestBase, size: 4 << 20, uaddr: fakeVA}, {gpa: guestBase + 4<<20, size: 4 << 20, uaddr: fakeVA + 4<<20, offset: 4 << 20}}, []int{g.fd}, nil
	})
	memCase("mem-pipe-fd", "a pipe's fd as the region's (not mappable)", func(g *guestMem) ([]region, []int, func()) {
		var p [2]int
		unix.Pipe2(p[:], unix.O_CLOEXEC)
		return g.table(), []int{p[0]}, func() { unix.Close(p[0]); unix.Close(p[1]) }
	})
	memCase("mem-too-many", "9 regions (the protocol's baseline is 8), 9 memfds", func(g *guestMem) ([]region, []int, func()) {
		var rs []region
		var fds []int
		for i := 0; i < 9; i++ {
			fd, err := unix.MemfdCreate("vhostprobe-region", unix.MFD_CLOEXEC)
			if err != nil || unix.Ftruncate(fd, 1<<20) != nil {
				continue
			}
			rs = append(rs, region{gpa: guestBase + uint64(i)<<20, size: 1 << 20, uaddr: fakeVA + uint64(i)<<20})
			fds = append(fds, fd)
		}
		return rs, fds, func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	})
	cases["mem-nregions-lie"] = hcase{what: "nregions 200 with one region's bytes", must: "refuse", run: func(path string) (string, string, error) {
		c, g, err := negotiated(path)
		if err != nil {
			return "", "", err
		}
		defer c.close()
		defer g.free()
		p := memTable(g.table())
		binary.LittleEndian.PutUint32(p, 200)
		return judge(c, c.send(reqSetMemTable, p, g.fd))
	}}
	cases["mem-overlap"] = hcase{what: "two regions over the same guest addresses", run: func(path string) (string, string, error) {
		c, g, err := negotiated(path)
		if err != nil {
			return "", "", err
		}
		defer c.close()
		defer g.free()
		rs := []region{{gpa: guestBase, size: 8 << 20, uaddr: fakeVA}, {gpa: guestBase + 4<<20, size: 4 << 20, uaddr: fakeVA + 64<<20}}
		return judge(c, c.send(reqSetMemTable, memTable(rs), g.fd, g.fd))
	}}
	cases["mem-beyond-fd-rings"] = hcase{what: "a 16 MiB region over an 8 MiB memfd, rings placed past the memfd's end, then kicks and a frame to the host", run: func(path string) (string, string, error) {
		return beyondRings(path)
	}}
	cases["mem-shrink"] = hcase{what: "the memfd shrunk to one page after the rings are up, then kicks and frames both ways", run: shrink}

	// Messages.
	cases["msg-short-header"] = hcase{what: "6 bytes of a header, then the connection closed", run: func(path string) (string, string, error) {
		c, err := dial(sockPath(path))
		if err != nil {
			return "", "", err
		}
		c.sendRaw(msg(reqGetFeatures, flagVersion, nil)[:6])
		time.Sleep(100 * time.Millisecond)
		c.close()
		return afterwards(path, "survived", "")
	}}
	cases["msg-size-huge"] = hcase{what: "a header whose size field is 0xffffffff", must: "refuse", run: func(path string) (string, string, error) {
		c, _, err := negotiated(path)
		if err != nil {
			return "", "", err
		}
		defer c.close()
		b := msg(reqSetFeatures, flagVersion|flagNeedReply, u64(fVersion1))
		binary.LittleEndian.PutUint32(b[8:], 0xffffffff)
		if err := c.sendRaw(b); err != nil {
			return judge(c, err)
		}
		return expectClose(c)
	}}
	cases["msg-size-beyond-payload"] = hcase{what: "a header saying 64 bytes follow, 8 sent, then silence (the backend must not wait forever holding the host slot)", run: func(path string) (string, string, error) {
		c, _, err := negotiated(path)
		if err != nil {
			return "", "", err
		}
		b := msg(reqSetFeatures, flagVersion, u64(fVersion1))
		binary.LittleEndian.PutUint32(b[8:], 64)
		c.sendRaw(b)
		time.Sleep(200 * time.Millisecond)
		c.close()
		return afterwards(path, "survived", "")
	}}
	cases["msg-size-short"] = hcase{what: "SET_VRING_NUM with a 4-byte payload (8 due)", must: "refuse", run: func(path string) (string, string, error) {
		c, _, err := negotiated(path)
		if err != nil {
			return "", "", err
		}
		defer c.close()
		return judge(c, c.send(reqSetVringNum, []byte{0, 0, 0, 1}))
	}}
	cases["msg-features-short"] = hcase{what: "SET_FEATURES with a 2-byte payload", must: "refuse", run: func(path string) (string, string, error) {
		c, _, err := negotiated(path)
		if err != nil {
			return "", "", err
		}
		defer c.close()
		return judge(c, c.send(reqSetFeatures, []byte{1, 0}))
	}}
	cases["msg-unknown"] = hcase{what: "request 9999 with need_reply", must: "refuse", run: func(path string) (string, string, error) {
		c, _, err := negotiated(path)
		if err != nil {
			return "", "", err
		}
		defer c.close()
		return judge(c, c.send(9999, u64(0)))
	}}
	cases["msg-log-base"] = hcase{what: "SET_LOG_BASE (dirty logging, never offered) with need_reply and an fd", must: "refuse", run: func(path string) (string, string, error) {
		c, g, err := negotiated(path)
		if err != nil {
			return "", "", err
		}
		defer c.close()
		defer g.free()
		p := binary.LittleEndian.AppendUint64(nil, 4096)
		p = binary.LittleEndian.AppendUint64(p, 0)
		return judge(c, c.send(reqSetLogBase, p, g.fd))
	}}
	cases["msg-log-all"] = hcase{what: "SET_FEATURES with VHOST_F_LOG_ALL (never offered)", must: "refuse", run: func(path string) (string, string, error) {
		c, _, err := negotiated(path)
		if err != nil {
			return "", "", err
		}
		defer c.close()
		return judge(c, c.send(reqSetFeatures, u64(fVersion1|fProtocolFeatures|fLogAll)))
	}}
	cases["msg-too-many-fds"] = hcase{what: "SET_VRING_CALL with 64 eventfds (the extra ones must be closed, not kept)", run: func(path string) (string, string, error) {
		c, _, err := negotiated(path)
		if err != nil {
			return "", "", err
		}
		defer c.close()
		fds := eventfds(64)
		defer closeFDs(fds)
		return judge(c, c.send(reqSetVringCall, u64(0), fds...))
	}}
	cases["msg-fds-on-none"] = hcase{what: "GET_FEATURES and SET_OWNER carrying 8 eventfds each", run: func(path string) (string, string, error) {
		c, _, err := negotiated(path)
		if err != nil {
			return "", "", err
		}
		defer c.close()
		fds := eventfds(8)
		defer closeFDs(fds)
		if err := c.sendRaw(msg(reqGetFeatures, flagVersion, nil), fds...); err != nil {
			return judge(c, err)
		}
		if _, err := c.recvU64(reqGetFeatures, 3*time.Second); err != nil {
			return judge(c, err)
		}
		return judge(c, c.send(reqSetOwner, nil, fds...))
	}}
	cases["msg-garbage"] = hcase{what: "4 KiB of bytes that are no message", run: func(path string) (string, string, error) {
		c, err := dial(sockPath(path))
		if err != nil {
			return "", "", err
		}
		defer c.close()
		b := make([]byte, 4096)
		for i := range b {
			b[i] = byte(i*131 + 7)
		}
		return judge(c, c.sendRaw(b))
	}}
	cases["msg-bad-version"] = hcase{what: "GET_FEATURES with version 2 in the flags", run: func(path string) (string, string, error) {
		c, err := dial(sockPath(path))
		if err != nil {
			return "", "", err
		}
		defer c.close()
		if err := c.sendRaw(msg(reqGetFeatures, 2, nil)); err != nil {
			return judge(c, err)
		}
		_, _, _, err = c.recv(2 * time.Second)
		return judge(c, err)
	}}

	// Rings.
	ringCase := func(name, what, must string, req uint32, p func() []byte) {
		cases[name] = hcase{what: what, must: must, run: func(path string) (string, string, error) {
			c, g, err := negotiated(path)
			if err != nil {
				return "", "", err
			}
			defer c.close()
			defer g.free()
			if err := c.send(reqSetMemTable, memTable(g.table()), g.fd); err != nil {
				return "", "", fmt.Errorf("honest SET_MEM_TABLE: %w", err)
			}
			return judge(c, c.send(req, p()))
		}}
	}
	ringCase("ring-num-not-pow2", "SET_VRING_NUM 255", "refuse", reqSetVringNum, func() []byte { return vringState(1, 255) })
	ringCase("ring-num-too-large", "SET_VRING_NUM 65536 (virtio's limit is 32768)", "refuse", reqSetVringNum, func() []byte { return vringState(1, 65536) })
	ringCase("ring-num-zero", "SET_VRING_NUM 0", "refuse", reqSetVringNum, func() []byte { return vringState(1, 0) })
	ringCase("ring-index-bad", "SET_VRING_NUM on ring 200 (one queue pair: rings 0 and 1)", "refuse", reqSetVringNum, func() []byte { return vringState(200, 256) })
	ringCase("ring-addr-index-bad", "SET_VRING_ADDR on ring 0xffffffff", "refuse", reqSetVringAddr, func() []byte { return vringAddr(0xffffffff, va(q0Desc), va(q0Used), va(q0Avail)) })
	cases["ring-addr-outside"] = hcase{what: "ring addresses outside every region, then kicks", run: func(path string) (string, string, error) {
		return badRingAddr(path, va(memSize)+0x100000, va(q1Used), va(q1Avail))
	}}
	cases["ring-addr-straddle"] = hcase{what: "a used ring that starts 8 bytes before the region's end, then kicks", run: func(path string) (string, string, error) {
		return badRingAddr(path, va(q1Desc), va(memSize-8), va(q1Avail))
	}}
	cases["ring-kick-pipe"] = hcase{what: "a pipe (kept readable) as the kick fd", run: func(path string) (string, string, error) {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
			return "", "", err
		}
		defer unix.Close(p[0])
		defer unix.Close(p[1])
		unix.Write(p[1], make([]byte, 4096))
		c, g, err := negotiated(path)
		if err != nil {
			return "", "", err
		}
		defer c.close()
		defer g.free()
		if err := c.send(reqSetMemTable, memTable(g.table()), g.fd); err != nil {
			return "", "", err
		}
		return judge(c, c.send(reqSetVringKick, u64(1), p[0]))
	}}

	// Descriptors: an honest frontend whose transmit (or receive) ring
	// then holds a bad chain.
	descCase := func(name, what string, build func(f *frontend, slot int) uint16) {
		cases[name] = hcase{what: what, run: func(path string) (string, string, error) { return badChain(path, build, 1) }}
	}
	txBuf := func(slot int) int { return txBufs + slot*txBufSize }
	descCase("desc-loop", "a chain whose descriptors point at each other", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, gpa(txBuf(s)), 64, descNext, uint16(s+1))
		f.g.putDesc(q1Desc, s+1, gpa(txBuf(s)), 64, descNext, uint16(s))
		return uint16(s)
	})
	descCase("desc-self-loop", "a descriptor whose next is itself", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, gpa(txBuf(s)), 64, descNext, uint16(s))
		return uint16(s)
	})
	descCase("desc-chain-longer-than-ring", "an indirect table of 300 chained descriptors on a ring of 256", func(f *frontend, s int) uint16 {
		t := scratch
		for i := 0; i < 300; i++ {
			f.g.putDesc(t, i, gpa(txBuf(s)), 20, descNext, uint16(i+1))
		}
		f.g.putDesc(t, 299, gpa(txBuf(s)), 20, 0, 0)
		f.g.putDesc(q1Desc, s, gpa(t), 300*16, descIndirect, 0)
		return uint16(s)
	})
	descCase("desc-out-of-region", "a buffer address past the region's end", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, gpa(memSize+4096), 100, 0, 0)
		return uint16(s)
	})
	descCase("desc-below-region", "a buffer address below the region (guest address 0)", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, 0, 100, 0, 0)
		return uint16(s)
	})
	descCase("desc-straddle", "a buffer that starts inside the region and ends 100 bytes past it", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, gpa(memSize-100), 200, 0, 0)
		return uint16(s)
	})
	descCase("desc-len-overflow", "len 0xffffffff near the region's end", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, gpa(memSize-16), 0xffffffff, 0, 0)
		return uint16(s)
	})
	descCase("desc-addr-wrap", "address 2^64-256 with len 512 (wraps)", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, ^uint64(0)-255, 512, 0, 0)
		return uint16(s)
	})
	descCase("desc-chain-len-overflow", "a chain of two 0xfffffff0-byte descriptors (the sum overflows 32 bits)", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, gpa(0), 0xfffffff0, descNext, uint16(s+1))
		f.g.putDesc(q1Desc, s+1, gpa(0), 0xfffffff0, 0, 0)
		return uint16(s)
	})
	descCase("desc-too-big-frame", "a valid chain of 60,000 bytes (frames are at most 9234 + the header)", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, gpa(txBufs), 60000, 0, 0)
		return uint16(s)
	})
	descCase("desc-zero-len", "a 0-byte buffer (not even a virtio-net header)", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, gpa(txBuf(s)), 0, 0, 0)
		return uint16(s)
	})
	descCase("desc-write-on-tx", "a device-writable buffer on the transmit ring", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, gpa(txBuf(s)), 100, descWrite, 0)
		return uint16(s)
	})
	descCase("desc-next-out-of-range", "next = 999 on a ring of 256", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, gpa(txBuf(s)), 64, descNext, 999)
		return uint16(s)
	})
	descCase("desc-head-out-of-range", "an avail entry naming descriptor 4000", func(f *frontend, s int) uint16 {
		return 4000
	})
	descCase("desc-indirect-nested", "an indirect table holding an indirect descriptor", func(f *frontend, s int) uint16 {
		f.g.putDesc(scratch, 0, gpa(scratch+64), 32, descIndirect, 0)
		f.g.putDesc(scratch+64, 0, gpa(txBuf(s)), 100, 0, 0)
		f.g.putDesc(q1Desc, s, gpa(scratch), 16, descIndirect, 0)
		return uint16(s)
	})
	descCase("desc-indirect-out-of-region", "an indirect table past the region's end", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, gpa(memSize+8192), 64, descIndirect, 0)
		return uint16(s)
	})
	descCase("desc-indirect-straddle", "an indirect table running 32 bytes past the region's end", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, gpa(memSize-32), 64, descIndirect, 0)
		return uint16(s)
	})
	descCase("desc-indirect-len-odd", "an indirect table of 17 bytes", func(f *frontend, s int) uint16 {
		f.g.putDesc(scratch, 0, gpa(txBuf(s)), 100, 0, 0)
		f.g.putDesc(q1Desc, s, gpa(scratch), 17, descIndirect, 0)
		return uint16(s)
	})
	descCase("desc-indirect-zero", "an indirect table of 0 bytes", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, gpa(scratch), 0, descIndirect, 0)
		return uint16(s)
	})
	descCase("desc-indirect-huge", "an indirect table of 2^31 bytes", func(f *frontend, s int) uint16 {
		f.g.putDesc(q1Desc, s, gpa(scratch), 1<<31, descIndirect, 0)
		return uint16(s)
	})
	descCase("desc-indirect-loop", "an indirect table whose entries point at each other", func(f *frontend, s int) uint16 {
		f.g.putDesc(scratch, 0, gpa(txBuf(s)), 64, descNext, 1)
		f.g.putDesc(scratch, 1, gpa(txBuf(s)), 64, descNext, 0)
		f.g.putDesc(q1Desc, s, gpa(scratch), 32, descIndirect, 0)
		return uint16(s)
	})
	descCase("desc-indirect-next-out", "an indirect entry whose next is past the table", func(f *frontend, s int) uint16 {
		f.g.putDesc(scratch, 0, gpa(txBuf(s)), 64, descNext, 5)
		f.g.putDesc(q1Desc, s, gpa(scratch), 16, descIndirect, 0)
		return uint16(s)
	})
	cases["avail-idx-jump"] = hcase{what: "avail.idx moved 40,000 ahead of the backend on a ring of 256", run: func(path string) (string, string, error) {
		return badChain(path, func(f *frontend, s int) uint16 {
			f.tx.availIdx += 40000
			f.g.putDesc(q1Desc, s, gpa(txBuf(s)), 64, 0, 0)
			return uint16(s)
		}, 1)
	}}
	for _, k := range []struct{ name, what string }{
		{"rx-out-of-region", "receive buffers past the region's end"},
		{"rx-loop", "receive chains of 64-byte buffers looping to themselves (a frame needs more)"},
		{"rx-readonly", "receive buffers without the device-writable flag"},
		{"rx-mixed", "receive buffers out of the region, read-only, looped and 4 bytes long, in turn"},
	} {
		kind := k.name
		cases[kind] = hcase{what: k.what + ", then 64 frames to the host", run: func(path string) (string, string, error) { return rxBad(path, kind) }}
	}
	cases["desc-persist"] = hcase{what: "500 chains out of the region, kicked one by one: a frontend that keeps doing it is disconnected", must: "closed", run: func(path string) (string, string, error) {
		return badChain(path, func(f *frontend, s int) uint16 {
			f.g.putDesc(q1Desc, s, gpa(memSize+4096), 100, 0, 0)
			return uint16(s)
		}, 500)
	}}
	cases["second-frontend"] = hcase{what: "a second frontend while an honest one is attached (the one-host rule): refused, and the first goes on", must: "refuse", run: secondFrontend}
	cases["connect-flood"] = hcase{what: "300 connections opened and closed as fast as they go, half of them after a GET_FEATURES", run: func(path string) (string, string, error) {
		for i := 0; i < 300; i++ {
			c, err := dial(sockPath(path))
			if err != nil {
				continue
			}
			if i%2 == 0 {
				c.sendRaw(msg(reqGetFeatures, flagVersion, nil))
			}
			c.close()
		}
		return afterwards(path, "survived", "")
	}}
	cases["msg-no-read"] = hcase{what: "20,000 GET_FEATURES sent without reading one reply, then the connection closed", run: func(path string) (string, string, error) {
		c, err := dial(sockPath(path))
		if err != nil {
			return "", "", err
		}
		m := msg(reqGetFeatures, flagVersion, nil)
		var buf []byte
		for i := 0; i < 1000; i++ {
			buf = append(buf, m...)
		}
		sent := 0
		for i := 0; i < 20; i++ {
			if c.sendRaw(buf) != nil {
				break // the backend stopped reading: its replies are not read either
			}
			sent += 1000
		}
		c.close()
		return afterwards(path, "survived", fmt.Sprintf("%d requests went out; ", sent))
	}}
	cases["kick-storm"] = hcase{what: "2 s of kicks as fast as they go on both rings, nothing posted, then honest frames", run: kickStorm}
}

func hostile(args []string) error {
	fs := flag.NewFlagSet("hostile", flag.ExitOnError)
	path := fs.String("path", "", "the multifs mount")
	name := fs.String("case", "", "the case (vhostprobe cases lists them)")
	fs.Parse(args)
	hc, ok := cases[*name]
	if !ok || *path == "" {
		return fmt.Errorf("hostile: unknown case %q or no -path", *name)
	}
	outcome, detail, err := hc.run(*path)
	if err != nil {
		fmt.Printf("case=%s outcome=error detail=%q\n", *name, err.Error())
		return err
	}
	fmt.Printf("case=%s outcome=%s detail=%q\n", *name, outcome, detail)
	switch {
	case hc.must == "refuse" && outcome != "refused":
		return fmt.Errorf("%s: the backend must refuse this (%s), outcome %s", *name, hc.what, outcome)
	case hc.must == "closed" && outcome != "closed" && outcome != "refused":
		return fmt.Errorf("%s: the backend must end the connection (%s), outcome %s", *name, hc.what, outcome)
	}
	return nil
}

// negotiated connects and negotiates as QEMU does (REPLY_ACK on when
// offered), and makes a guest memory for the case.
func negotiated(path string) (*conn, *guestMem, error) {
	c, err := dial(sockPath(path))
	if err != nil {
		return nil, nil, err
	}
	if _, _, err := negotiate(c, feOpts{}); err != nil {
		c.close()
		return nil, nil, fmt.Errorf("negotiate: %w", err)
	}
	g, err := newGuestMem(memSize)
	if err != nil {
		c.close()
		return nil, nil, err
	}
	return c, g, nil
}

// judge turns the bad message's result into an outcome: refused (an error
// ack, or the connection ended), accepted (and the backend still
// answers), or an error when the backend neither answered nor closed.
func judge(c *conn, err error) (string, string, error) {
	var ae *ackError
	switch {
	case errors.As(err, &ae):
		if err := c.alive(); err != nil && !errors.Is(err, errClosed) {
			return "", "", fmt.Errorf("refused with ack %d, then left hanging: %w", ae.v, err)
		}
		return "refused", fmt.Sprintf("ack %d", ae.v), nil
	case errors.Is(err, errClosed):
		return "refused", "connection ended", nil
	case err != nil:
		return "", "", fmt.Errorf("neither an answer nor the end of the connection: %w", err)
	}
	switch err := c.alive(); {
	case err == nil:
		return "accepted", "the backend still answers", nil
	case errors.Is(err, errClosed):
		return "refused", "connection ended after the message", nil
	default:
		return "", "", fmt.Errorf("left hanging after the message: %w", err)
	}
}

// expectClose waits up to 3 s for the backend to end the connection.
func expectClose(c *conn) (string, string, error) {
	_, _, _, err := c.recv(3 * time.Second)
	if errors.Is(err, errClosed) {
		return "refused", "connection ended", nil
	}
	if err == nil {
		return "accepted", "the backend answered", nil
	}
	return "", "", fmt.Errorf("left hanging: %w", err)
}

// afterwards: the case's connection is gone; a new frontend must be
// answered within 3 s (the host slot free again).
func afterwards(path, outcome, detail string) (string, string, error) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		c, err := dial(sockPath(path))
		if err == nil {
			err = c.alive()
			c.close()
			if err == nil {
				return outcome, detail + "a new frontend is answered", nil
			}
		}
		if time.Now().After(deadline) {
			return "", "", fmt.Errorf("no new frontend answered within 3 s: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func eventfds(n int) []int {
	var fds []int
	for i := 0; i < n; i++ {
		if fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC); err == nil {
			fds = append(fds, fd)
		}
	}
	return fds
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// attachedHere waits (2 s) until PATH/host/stats names this process as
// the attached host: frames sent before the multilink took the host in
// would be dropped for want of a host.
func attachedHere(path string) error {
	me := fmt.Sprint(os.Getpid())
	if waitUntil(2*time.Second, func() bool { return hostStat(path, "attached") == "yes" && hostStat(path, "pid") == me }) {
		return nil
	}
	return fmt.Errorf("host/stats does not name this process (pid %s) as the attached host within 2 s", me)
}

// warmUp sends a frame of another EtherType (never counted) until the
// link gets one, at most 2 s: the link's Dial can return a moment before
// the multilink forwards to it (such frames are counted in the root
// stats' dropped_no_link), which is no matter for what the cases test.
func warmUp(f *frontend, link *client.Client) error {
	w := make([]byte, 64)
	for i := 0; i < 6; i++ {
		w[i] = 0xff
	}
	binary.BigEndian.PutUint16(w[12:], 0x88b6)
	rb := make([]byte, 10000)
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		if err := f.send(w, true); err != nil {
			return err
		}
		for {
			n, err := link.Recv(rb, 50*time.Millisecond)
			if err != nil {
				break
			}
			if n >= 14 && binary.BigEndian.Uint16(rb[12:]) == 0x88b6 {
				// Drain the other warm-up frames still on their way.
				for {
					if _, err := link.Recv(rb, 50*time.Millisecond); err != nil {
						return nil
					}
				}
			}
		}
	}
	return errors.New("no frame from the host reached the link within 2 s")
}

// goodAfter sends n honest frames host → link and counts those the link
// got: whether the backend still relays after a bad chain.
func goodAfter(f *frontend, link *client.Client, n int) int {
	buf := make([]byte, 100)
	for i := 0; i < n; i++ {
		if f.send(probeframe.Build(buf, uint64(i), 0x02), true) != nil {
			break
		}
	}
	got := 0
	rb := make([]byte, 10000)
	for got < n {
		m, err := link.Recv(rb, time.Second)
		if err != nil {
			break
		}
		if _, isProbe, intact := probeframe.Check(rb[:m]); isProbe && intact {
			got++
		}
	}
	return got
}

// badChain attaches honestly, then posts `times` bad chains built by
// build on the transmit ring, kicking after each, and reports whether the
// backend closed the connection and whether good frames still pass.
func badChain(path string, build func(f *frontend, slot int) uint16, times int) (string, string, error) {
	f, link, err := hostWithLink(path, feOpts{}, "vhostprobe hostile link")
	if err != nil {
		return "", "", err
	}
	defer f.close()
	defer link.Close()
	if err := warmUp(f, link); err != nil {
		return "", "", err
	}
	if got := goodAfter(f, link, 5); got != 5 {
		return "", "", fmt.Errorf("before the bad chain only %d of 5 honest frames passed", got)
	}
	rx0 := hostStat(path, "rx_packets")
	closed := false
	for i := 0; i < times && !closed; i++ {
		f.reclaim()
		if len(f.txFree) < 2 {
			time.Sleep(5 * time.Millisecond)
			f.reclaim()
			if len(f.txFree) < 2 {
				break
			}
		}
		// Slots come from the free list; a two-descriptor case uses the
		// slot and the one above it, so take the lowest even free slot's
		// pair when both are free.
		s := pickPair(f)
		if s < 0 {
			break
		}
		head := build(f, s)
		f.tx.post(head)
		f.tx.doKick()
		if times > 1 && i%50 == 49 {
			if err := f.c.alive(); errors.Is(err, errClosed) {
				closed = true
			}
		}
	}
	// The drop is counted: host/stats rx_dropped, read while still
	// attached (it was 0 after the honest frames).
	var dropped string
	waitUntil(time.Second, func() bool {
		dropped = hostStat(path, "rx_dropped")
		return dropped != "" && dropped != "0"
	})
	rx1 := hostStat(path, "rx_packets")
	switch err := f.c.alive(); {
	case errors.Is(err, errClosed) || closed:
		return "closed", "the backend ended the connection", nil
	case err != nil:
		return "", "", fmt.Errorf("left hanging after the bad chain: %w", err)
	}
	got := goodAfter(f, link, 5)
	detail := fmt.Sprintf("still attached; host/stats rx_dropped %s, rx_packets %s before the bad chain and %s after it; %d of 5 honest frames passed afterwards", dropped, rx0, rx1, got)
	if rx1 != rx0 {
		return "", "", fmt.Errorf("the bad chain was relayed as a frame (%s)", detail)
	}
	if dropped == "" || dropped == "0" {
		return "", "", fmt.Errorf("the bad chain was dropped without being counted (%s)", detail)
	}
	return "survived", detail, nil
}

// hostStat reads KEY from PATH/host/stats ("" if absent).
func hostStat(path, key string) string {
	return fileStat(filepath.Join(path, "host", "stats"), key)
}

// fileStat reads KEY from a stats file, with the daemon's clients' parser
// ("" if absent, or the file unreadable or not stats).
func fileStat(file, key string) string {
	f, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := treeclient.ReadStats(f)
	if err != nil {
		return ""
	}
	return st[key]
}

func waitUntil(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pickPair removes a free slot s with s+1 also free (s+1 < queueSize) from
// the free list and returns s, or -1.
func pickPair(f *frontend) int {
	free := map[uint16]int{}
	for i, s := range f.txFree {
		free[s] = i
	}
	for _, s := range f.txFree {
		if s+1 < queueSize {
			if _, ok := free[s+1]; ok {
				out := f.txFree[:0]
				for _, x := range f.txFree {
					if x != s && x != s+1 {
						out = append(out, x)
					}
				}
				f.txFree = out
				return int(s)
			}
		}
	}
	return -1
}

// badRingAddr sets the transmit ring's addresses as given (the receive
// ring honest), kicks both, and sends a frame towards the host.
func badRingAddr(path string, desc, used, avail uint64) (string, string, error) {
	c, g, err := negotiated(path)
	if err != nil {
		return "", "", err
	}
	defer c.close()
	defer g.free()
	if err := c.send(reqSetMemTable, memTable(g.table()), g.fd); err != nil {
		return "", "", err
	}
	tx, err := newVQ(g, 1, queueSize, q1Desc, q1Avail, q1Used)
	if err != nil {
		return "", "", err
	}
	defer tx.closeFDs()
	steps := []struct {
		req uint32
		p   []byte
		fds []int
	}{
		{reqSetVringCall, u64(1), []int{tx.call}},
		{reqSetVringNum, vringState(1, queueSize), nil},
		{reqSetVringBase, vringState(1, 0), nil},
		{reqSetVringAddr, vringAddr(1, desc, used, avail), nil},
		{reqSetVringKick, u64(1), []int{tx.kick}},
		{reqSetVringEnable, vringState(1, 1), nil},
	}
	for _, s := range steps {
		if err := c.send(s.req, s.p, s.fds...); err != nil {
			return judge(c, err)
		}
	}
	for i := 0; i < 10; i++ {
		tx.doKick()
		time.Sleep(10 * time.Millisecond)
	}
	return judge(c, nil)
}

// beyondRings: a region larger than its memfd, accepted or not; if
// accepted, the rings live past the memfd's end, where a backend that
// touches them takes SIGBUS.
func beyondRings(path string) (string, string, error) {
	c, g, err := negotiated(path)
	if err != nil {
		return "", "", err
	}
	defer c.close()
	defer g.free()
	rs := []region{{gpa: guestBase, size: 16 << 20, uaddr: fakeVA}}
	o, d, err := judge(c, c.send(reqSetMemTable, memTable(rs), g.fd))
	if err != nil || o != "accepted" {
		return o, d, err
	}
	past := 12 << 20
	for _, q := range []uint32{0, 1} {
		k := eventfds(2)
		defer closeFDs(k)
		base := uint64(past + int(q)*0x4000)
		steps := []struct {
			req uint32
			p   []byte
			fds []int
		}{
			{reqSetVringCall, u64(uint64(q)), []int{k[1]}},
			{reqSetVringNum, vringState(q, queueSize), nil},
			{reqSetVringBase, vringState(q, 0), nil},
			{reqSetVringAddr, vringAddr(q, fakeVA+base, fakeVA+base+0x2000, fakeVA+base+0x1000), nil},
			{reqSetVringKick, u64(uint64(q)), []int{k[0]}},
			{reqSetVringEnable, vringState(q, 1), nil},
		}
		for _, s := range steps {
			if err := c.send(s.req, s.p, s.fds...); err != nil {
				return judge(c, err)
			}
		}
		var one [8]byte
		one[0] = 1
		unix.Write(k[0], one[:])
	}
	link, err := client.Dial(path, "vhostprobe hostile link")
	if err == nil {
		buf := make([]byte, 100)
		for i := 0; i < 10; i++ {
			link.Send(probeframe.Build(buf, uint64(i), 0x02))
		}
		time.Sleep(200 * time.Millisecond)
		link.Close()
	}
	o, d, err = judge(c, nil)
	return o, "the table was accepted; rings past the memfd's end: " + d, err
}

// shrink: an honest frontend whose memfd shrinks under the backend's
// mapping; transmit chains posted before (not kicked), kicked after, and
// frames sent to the host.
func shrink(path string) (string, string, error) {
	f, link, err := hostWithLink(path, feOpts{}, "vhostprobe hostile link")
	if err != nil {
		return "", "", err
	}
	defer f.close()
	defer link.Close()
	if err := warmUp(f, link); err != nil {
		return "", "", err
	}
	if got := goodAfter(f, link, 5); got != 5 {
		return "", "", fmt.Errorf("before the shrink only %d of 5 honest frames passed", got)
	}
	buf := make([]byte, 100)
	for i := 0; i < 8; i++ {
		f.send(probeframe.Build(buf, uint64(i), 0x02), false)
	}
	if err := unix.Ftruncate(f.g.fd, 4096); err != nil {
		return "", "", err
	}
	// From here on this process must not touch the guest memory either.
	f.tx.doKick()
	f.rx.doKick()
	for i := 0; i < 20; i++ {
		link.Send(probeframe.Build(buf, uint64(i), 0x02))
	}
	time.Sleep(300 * time.Millisecond)
	o, d, err := judge(f.c, nil)
	switch o {
	case "accepted":
		o = "survived"
	case "refused":
		o = "closed"
	}
	return o, d, err
}

// rxBad: receive buffers the backend must not use, then frames to it:
// they must be dropped and counted (tx_dropped).
func rxBad(path, kind string) (string, string, error) {
	f, link, err := hostWithLink(path, feOpts{}, "vhostprobe hostile link")
	if err != nil {
		return "", "", err
	}
	defer f.close()
	defer link.Close()
	// The receive ring was posted full at attach: rewrite those
	// descriptors under the backend (as a guest may).
	for i := 0; i < queueSize; i++ {
		sel := i % 4
		switch kind {
		case "rx-out-of-region":
			sel = 0
		case "rx-readonly":
			sel = 1
		case "rx-loop":
			sel = 2
		}
		switch sel {
		case 0:
			f.g.putDesc(q0Desc, i, gpa(memSize+4096), rxBufSize, descWrite, 0)
		case 1:
			f.g.putDesc(q0Desc, i, gpa(rxBufs+i*rxBufSize), rxBufSize, 0, 0) // read-only
		case 2:
			f.g.putDesc(q0Desc, i, gpa(rxBufs+i*rxBufSize), 64, descWrite|descNext, uint16(i))
		case 3:
			f.g.putDesc(q0Desc, i, gpa(rxBufs+i*rxBufSize), 4, descWrite, 0) // shorter than the header
		}
	}
	buf := make([]byte, 100)
	for i := 0; i < 64; i++ {
		link.Send(probeframe.Build(buf, uint64(i), 0x02))
		time.Sleep(time.Millisecond)
	}
	var dropped string
	waitUntil(time.Second, func() bool {
		dropped = hostStat(path, "tx_dropped")
		return dropped != "" && dropped != "0"
	})
	o, d, err := judge(f.c, nil)
	if o == "accepted" {
		o = "survived"
		d = "host/stats tx_dropped " + dropped + ", tx_packets " + hostStat(path, "tx_packets") + "; " + d
		if kind != "rx-mixed" && hostStat(path, "tx_packets") != "0" {
			return "", "", fmt.Errorf("frames were written into receive buffers the backend must refuse (%s)", d)
		}
		if dropped == "" || dropped == "0" {
			return "", "", fmt.Errorf("frames the backend could not place were not counted (%s)", d)
		}
	}
	return o, d, err
}

// kickStorm: kicks as fast as eventfd writes go, for 2 s, then honest
// frames both ways must pass.
func kickStorm(path string) (string, string, error) {
	f, link, err := hostWithLink(path, feOpts{}, "vhostprobe hostile link")
	if err != nil {
		return "", "", err
	}
	defer f.close()
	defer link.Close()
	n := 0
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); n++ {
		f.tx.doKick()
		f.rx.doKick()
	}
	got := goodAfter(f, link, 20)
	o, d, err := judge(f.c, nil)
	if o == "accepted" {
		o = "survived"
	}
	detail := fmt.Sprintf("%d kicks on each ring; %d of 20 honest frames passed afterwards; %s", n, got, d)
	if err == nil && got != 20 {
		return "", "", errors.New(detail)
	}
	return o, detail, err
}

// secondFrontend: an honest frontend attached, a second connects and asks
// for its features: it must be refused (the connection ends), and the
// first still moves frames.
func secondFrontend(path string) (string, string, error) {
	f, link, err := hostWithLink(path, feOpts{}, "vhostprobe hostile link")
	if err != nil {
		return "", "", err
	}
	defer f.close()
	defer link.Close()
	if err := warmUp(f, link); err != nil {
		return "", "", err
	}
	c, err := dial(sockPath(path))
	if err != nil {
		return "refused", "connect refused", nil
	}
	defer c.close()
	o, d, err := judge(c, c.alive())
	if err != nil {
		return "", "", err
	}
	got := goodAfter(f, link, 5)
	if got != 5 {
		return "", "", fmt.Errorf("the first frontend moved %d of 5 frames after the second tried (%s: %s)", got, o, d)
	}
	if o != "refused" {
		return o, d + "; the second frontend was answered", nil
	}
	return o, d + "; the first still moves frames", nil
}
