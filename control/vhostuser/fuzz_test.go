package vhostuser

import (
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// FuzzRequests drives a device set up by an honest frontend with
// arbitrary requests, then moves a frame each way: the daemon must not
// panic, hang, or leave its loop anything but cleanly. The input is cut
// into requests by their own size fields; so that fuzzed addresses can
// land in guest memory, the harness adds the mapping's base to
// SET_VRING_ADDR's and SET_MEM_TABLE's frontend addresses, and attaches
// the memfd to memory tables and eventfds to kick/call/err requests.
func FuzzRequests(f *testing.F) {
	msg := func(req, flags uint32, payload []byte) []byte {
		b := make([]byte, HeaderLen, HeaderLen+len(payload))
		binary.NativeEndian.PutUint32(b, req)
		binary.NativeEndian.PutUint32(b[4:], flags)
		binary.NativeEndian.PutUint32(b[8:], uint32(len(payload)))
		return append(b, payload...)
	}
	fe0 := &frontend{}
	// A ring moved elsewhere, a new memory table, a stop and restart.
	seed := msg(reqGetVringBase, 1, state(txQueue, 0))
	seed = append(seed, msg(reqSetVringNum, 1, state(txQueue, 16))...)
	seed = append(seed, msg(reqSetVringAddr, 1|flagNeedReply, fe0.addrPayload(txQueue, 0x8000, 0x8100, 0x8200))...)
	seed = append(seed, msg(reqSetVringKick, 1, u64(txQueue))...)
	seed = append(seed, msg(reqSetMemTable, 1, memTablePayload([4]uint64{guestBase, memSize, 0, 0}))...)
	seed = append(seed, msg(reqSetVringEnable, 1, state(rxQueue, 0))...)
	seed = append(seed, msg(reqSetFeatures, 1, u64(fVersion1|fProtocolFeatures))...)
	f.Add(seed)
	f.Add(msg(reqSetVringBase, 1, state(rxQueue, 7)))
	f.Add(msg(999, 1|flagNeedReply, nil))
	f.Fuzz(fuzzRequests)
}

func fuzzRequests(t *testing.T, data []byte) {
	{
		fe := newFrontend(t)
		fe.start(stdFeatures)
		fe.postRX(0, 4, 2048)
		fe.transmit(0, frame(60, 1), false)
		// Drain the replies until the daemon's end closes (it must be
		// done before fe.sock is closed: its number would be reused).
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			var b [4096]byte
			for {
				n, err := unix.Read(fe.sock, b[:])
				if err == unix.EINTR || err == unix.EAGAIN {
					continue
				}
				if n <= 0 || err != nil {
					return
				}
			}
		}()
		for len(data) >= HeaderLen {
			req := binary.NativeEndian.Uint32(data)
			size := int(min(binary.NativeEndian.Uint32(data[8:]), uint32(len(data)-HeaderLen)))
			m := append([]byte(nil), data[:HeaderLen+size]...)
			data = data[HeaderLen+size:]
			p := m[HeaderLen:]
			var fds []int
			switch req {
			case reqSetVringAddr:
				for off := 8; off+8 <= len(p) && off < 32; off += 8 {
					binary.NativeEndian.PutUint64(p[off:], binary.NativeEndian.Uint64(p[off:])%(memSize+4096)+fe.uva(0))
				}
			case reqSetMemTable:
				n := 0
				if len(p) >= 4 {
					n = int(min(binary.NativeEndian.Uint32(p), MaxFDs))
				}
				for i := 0; i < n; i++ {
					if o := 8 + 32*i + 16; o+8 <= len(p) {
						binary.NativeEndian.PutUint64(p[o:], binary.NativeEndian.Uint64(p[o:])+fe.uva(0))
					}
					fds = append(fds, fe.memfd)
				}
			case reqSetVringKick, reqSetVringCall, reqSetVringErr:
				if len(p) > 0 {
					fds = []int{fe.kick[p[0]&1]}
					if req != reqSetVringKick {
						fds = []int{fe.call[p[0]&1]}
					}
				}
			}
			var oob []byte
			if len(fds) > 0 {
				oob = unix.UnixRights(fds...)
			}
			if unix.Sendmsg(fe.sock, m, oob, nil, unix.MSG_NOSIGNAL) != nil {
				break
			}
		}
		unix.Shutdown(fe.sock, unix.SHUT_WR)
		select {
		case <-fe.served:
			fe.served <- nil
		case <-time.After(10 * time.Second):
			t.Fatal("the request loop did not end")
		}
		fe.c.TrySendBatch([][]byte{frame(60, 2)})
		r := newReceiver()
		fe.c.receiveOnce(&fe.c.q[txQueue], r)
		fe.c.Close()
		<-drained
	}
}
