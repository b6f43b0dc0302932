package control

import (
	"bytes"
	"os"
	"testing"
	"time"

	"multifs/control/client"
	"multifs/multilink"
)

// TestMain removes the fuzz server's sockets once the tests are done (fuzz
// workers run it too).
func TestMain(m *testing.M) {
	code := m.Run()
	if fuzzServer.srv != nil {
		fuzzServer.srv.Close()
		fuzzServer.ml.Close()
		fuzzServer.eng.Close()
	}
	if fuzzServer.dir != "" {
		os.RemoveAll(fuzzServer.dir)
	}
	os.Exit(code)
}

// FuzzSeqpacketEntry sends arbitrary messages through a seqpacket link: a
// zero byte splits the input into several messages. Whatever they are, the
// host gets exactly the well-sized ones, intact, and the entry keeps
// admitting peers.
func FuzzSeqpacketEntry(f *testing.F) {
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{1}, 60))
	f.Add(append(bytes.Repeat([]byte{2}, 13), 0, 0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3))
	f.Fuzz(func(t *testing.T, in []byte) {
		ml, srv := sharedServer(t)
		host, err := client.DialSeqpacket(srv.HostSeqpacket())
		if err != nil {
			t.Fatalf("host: %v", err)
		}
		defer func() {
			host.Close()
			for deadline := time.Now().Add(time.Second); ml.HostAttached() && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
		}()
		link, err := client.DialSeqpacket(srv.LinkSeqpacket())
		if err != nil {
			t.Fatalf("link: %v", err)
		}
		defer link.Close()
		for deadline := time.Now().Add(time.Second); (!ml.HostAttached() || len(ml.Links()) == 0) && time.Now().Before(deadline); {
			time.Sleep(100 * time.Microsecond)
		}
		var want [][]byte
		for _, msg := range bytes.Split(in, []byte{0}) {
			if err := link.Send(msg); err != nil {
				t.Fatalf("send %d bytes: %v", len(msg), err)
			}
			if len(msg) >= multilink.MinFrame && len(msg) <= multilink.MaxFrame {
				want = append(want, msg)
			}
		}
		// An end marker, so that "nothing more arrived" can be known.
		marker := bytes.Repeat([]byte{0xee}, 42)
		link.Send(marker)
		buf := make([]byte, 65536)
		for i := 0; ; i++ {
			n, err := host.Recv(buf, 2*time.Second)
			if err != nil {
				t.Fatalf("host recv after %d frames: %v", i, err)
			}
			got := buf[:n]
			if bytes.Equal(got, marker) {
				if i != len(want) {
					t.Fatalf("host got %d frames, want %d", i, len(want))
				}
				return
			}
			if i >= len(want) || !bytes.Equal(got, want[i]) {
				t.Fatalf("frame %d: got %d bytes, not what was sent", i, n)
			}
		}
	})
}
