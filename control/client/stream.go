package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Stream is a client of a stream entry (PATH/stream or PATH/host/stream):
// QEMU's -netdev stream framing, each frame a 4-byte big-endian length and
// the frame. Not safe for concurrent use, but one goroutine may send while
// another receives.
type Stream struct {
	c    *net.UnixConn
	rbuf []byte // bytes read, not yet returned
	roff int
	wbuf []byte
}

// DialStream connects to a stream entry; the connection is a peer at once.
func DialStream(path string) (*Stream, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", path, err)
	}
	return &Stream{c: c, rbuf: make([]byte, 0, 256<<10)}, nil
}

// Conn is the connection, for tests that write raw bytes.
func (s *Stream) Conn() *net.UnixConn { return s.c }

// Send writes one frame, in one write (as QEMU does).
func (s *Stream) Send(frame []byte) error {
	s.wbuf = binary.BigEndian.AppendUint32(s.wbuf[:0], uint32(len(frame)))
	s.wbuf = append(s.wbuf, frame...)
	_, err := s.c.Write(s.wbuf)
	return err
}

// SendBatch writes frames in one write.
func (s *Stream) SendBatch(frames [][]byte) error {
	s.wbuf = s.wbuf[:0]
	for _, f := range frames {
		s.wbuf = binary.BigEndian.AppendUint32(s.wbuf, uint32(len(f)))
		s.wbuf = append(s.wbuf, f...)
	}
	_, err := s.c.Write(s.wbuf)
	return err
}

// ErrBadLength is what Recv returns at a length no Ethernet frame has:
// the stream is out of step.
var ErrBadLength = errors.New("stream: bad frame length")

// Recv returns the next frame, copied into buf, waiting up to timeout (0:
// no limit); io.EOF at the end of the stream, io.ErrUnexpectedEOF if it
// ended mid-frame.
func (s *Stream) Recv(buf []byte, timeout time.Duration) (int, error) {
	if timeout > 0 {
		s.c.SetReadDeadline(time.Now().Add(timeout))
	} else {
		s.c.SetReadDeadline(time.Time{})
	}
	for {
		if p := s.rbuf[s.roff:]; len(p) >= 4 {
			l := int(binary.BigEndian.Uint32(p))
			if l > 65536+4096 {
				return 0, fmt.Errorf("%w: %d", ErrBadLength, l)
			}
			if len(p) >= 4+l {
				n := copy(buf, p[4:4+l])
				s.roff += 4 + l
				return n, nil
			}
		}
		if s.roff > 0 {
			s.rbuf = s.rbuf[:copy(s.rbuf, s.rbuf[s.roff:])]
			s.roff = 0
		}
		if len(s.rbuf) == cap(s.rbuf) {
			s.rbuf = append(s.rbuf, 0)[:len(s.rbuf)]
		}
		n, err := s.c.Read(s.rbuf[len(s.rbuf):cap(s.rbuf)])
		s.rbuf = s.rbuf[:len(s.rbuf)+n]
		if err != nil {
			if errors.Is(err, io.EOF) && len(s.rbuf) > 0 {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
	}
}

// Close closes the connection.
func (s *Stream) Close() error { return s.c.Close() }
