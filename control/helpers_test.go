package control

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"multifs/control/client"
	"multifs/control/engine"
	"multifs/control/wire"
	"multifs/multilink"
	"multifs/perms"
)

// fuzzServer is one server shared by every input of a fuzz run: starting
// one per input would measure setup, not the entry.
var fuzzServer struct {
	once sync.Once
	dir  string
	ml   *multilink.Multilink
	eng  *engine.Engine
	srv  *Server
	err  error
}

func sharedServer(tb testing.TB) (*multilink.Multilink, *Server) {
	fuzzServer.once.Do(func() {
		dir, err := os.MkdirTemp("", "multifs-fuzz")
		if err != nil {
			fuzzServer.err = err
			return
		}
		fuzzServer.dir = dir
		p, _ := perms.Resolve(perms.Spec{}, uint32(os.Geteuid()), uint32(os.Getegid()))
		log := logrus.New()
		log.SetOutput(io.Discard)
		// No duplicate suppression: each input runs with a new host and
		// link on this one multilink, and an input's frames (the end
		// marker always) are often those of the one before, whose link
		// has just left: within the window, they are that link's copies.
		fuzzServer.ml = multilink.New(logrus.NewEntry(log), multilink.Dedup(0))
		sd, err := OpenSockDir(filepath.Join(dir, "s"), p)
		if err == nil {
			err = sd.Take(p)
		}
		if err != nil {
			fuzzServer.err = err
			return
		}
		if fuzzServer.eng, err = engine.New(); err != nil {
			fuzzServer.err = err
			return
		}
		fuzzServer.srv = NewServer(sd, p, fuzzServer.ml, fuzzServer.eng, logrus.NewEntry(log))
		if fuzzServer.err = fuzzServer.srv.Listen(); fuzzServer.err == nil {
			fuzzServer.srv.Serve()
		}
	})
	if fuzzServer.err != nil {
		tb.Fatal(fuzzServer.err)
	}
	return fuzzServer.ml, fuzzServer.srv
}

// A ptp-like client: joins, and when hung up reconnects at once, as
// libvdeplug_ptp.c does; reports the reconnect's error.
func reconnectAfterEOF(path string) (*client.Client, <-chan error) {
	c, err := client.DialSeqpacket(path)
	done := make(chan error, 1)
	if err != nil {
		done <- err
		return nil, done
	}
	go func() {
		if _, err := c.Recv(make([]byte, 100), 5*time.Second); !errors.Is(err, io.EOF) {
			done <- errors.New("no EOF: " + errString(err))
			return
		}
		c.Close()
		c2, err := client.DialSeqpacket(path)
		if err == nil {
			c2.Close()
		}
		done <- err
	}()
	return c, done
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func startHelper(t *testing.T, path string) (*exec.Cmd, *bufio.Reader, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRefuseHelperProcess$")
	cmd.Env = append(os.Environ(), "MULTIFS_REFUSE_HELPER="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); cmd.Process.Kill(); cmd.Wait() })
	return cmd, bufio.NewReader(out), in
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("helper: %v (read %q)", err, line)
	}
	return strings.TrimSuffix(line, "\n")
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func validRequest() []byte {
	return wire.Request{SockPath: "/tmp/.client-1", Description: "vde_plug user=0 pid=1"}.Encode()
}

func dialSeq(t *testing.T, path string) *client.Client {
	t.Helper()
	c, err := client.DialSeqpacket(path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// serve starts a server on a fresh socket directory and returns a dir that
// looks like a multifs mount to the client: DIR/ctl and DIR/host/ctl.
func serve(t *testing.T) (root string, ml *multilink.Multilink, srv *Server) {
	t.Helper()
	base := t.TempDir()
	sockdir := filepath.Join(base, "sock")
	p, err := perms.Resolve(perms.Spec{}, uint32(os.Geteuid()), uint32(os.Getegid()))
	if err != nil {
		t.Fatal(err)
	}
	sd, err := OpenSockDir(sockdir, p)
	if err == nil {
		err = sd.Take(p)
	}
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	ml = multilink.New(logrus.NewEntry(log))
	eng, err := engine.New()
	if err != nil {
		t.Fatal(err)
	}
	srv = NewServer(sd, p, ml, eng, logrus.NewEntry(log))
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	srv.Serve()
	root = filepath.Join(base, "mnt")
	os.MkdirAll(filepath.Join(root, "host"), 0o700)
	os.Symlink(srv.LinkCtl(), filepath.Join(root, "ctl"))
	os.Symlink(srv.HostCtl(), filepath.Join(root, "host", "ctl"))
	t.Cleanup(func() {
		srv.Close()
		ml.Close()
		if err := eng.Close(); err != nil {
			t.Errorf("closing the engine: %v", err)
		}
		if err := sd.Remove(); err != nil {
			t.Errorf("removing socket dir: %v", err)
		}
	})
	return root, ml, srv
}

func dial(t *testing.T, dir string) *client.Client {
	t.Helper()
	c, err := client.Dial(dir, "test pid=1")
	if err != nil {
		t.Fatalf("dial %s: %v", dir, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recvFrame is the next frame c receives within 2 s, whatever its
// transport (a vde-2 or seqpacket Client, a Stream).
func recvFrame(t *testing.T, c interface {
	Recv(buf []byte, timeout time.Duration) (int, error)
}) []byte {
	t.Helper()
	buf := make([]byte, 16384)
	n, err := c.Recv(buf, 2*time.Second)
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return buf[:n]
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
