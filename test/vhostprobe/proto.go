package main

// The frontend side of the vhost-user protocol, written from QEMU's
// docs/interop/vhost-user.rst: a message is a 12-byte header (u32
// request, u32 flags, u32 payload size, native byte order: little-endian
// here) and its payload, file descriptors ride along by SCM_RIGHTS.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Requests (frontend to backend).
const (
	reqGetFeatures         = 1
	reqSetFeatures         = 2
	reqSetOwner            = 3
	reqResetOwner          = 4
	reqSetMemTable         = 5
	reqSetLogBase          = 6
	reqSetLogFD            = 7
	reqSetVringNum         = 8
	reqSetVringAddr        = 9
	reqSetVringBase        = 10
	reqGetVringBase        = 11
	reqSetVringKick        = 12
	reqSetVringCall        = 13
	reqSetVringErr         = 14
	reqGetProtocolFeatures = 15
	reqSetProtocolFeatures = 16
	reqGetQueueNum         = 17
	reqSetVringEnable      = 18
)

// Header flags.
const (
	flagVersion   = 0x1
	flagReply     = 0x4
	flagNeedReply = 0x8
)

// Feature bits.
const (
	fMrgRxbuf         = 1 << 15
	fIndirectDesc     = 1 << 28
	fEventIdx         = 1 << 29
	fProtocolFeatures = 1 << 30
	fVersion1         = 1 << 32
	fLogAll           = 1 << 18 // VHOST_F_LOG_ALL

	pfMQ       = 1 << 0
	pfReplyAck = 1 << 3
)

// vringNoFD in a SET_VRING_KICK/CALL/ERR payload: no descriptor follows.
const vringNoFD = 1 << 8

const hdrSize = 12

// errClosed: the backend ended the connection.
var errClosed = errors.New("backend closed the connection")

// conn is one frontend connection.
type conn struct {
	uc       *net.UnixConn
	replyAck bool // REPLY_ACK negotiated: every message asks for an ack
}

func dial(path string) (*conn, error) {
	uc, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	return &conn{uc: uc}, nil
}

func (c *conn) close() { c.uc.Close() }

// sendRaw writes bytes and fds as one sendmsg, whatever they hold.
func (c *conn) sendRaw(b []byte, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	c.uc.SetWriteDeadline(time.Now().Add(3 * time.Second))
	n, _, err := c.uc.WriteMsgUnix(b, oob, nil)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil && isClosedErr(err) {
		return errClosed
	}
	return err
}

func msg(req, flags uint32, payload []byte) []byte {
	b := make([]byte, hdrSize+len(payload))
	binary.LittleEndian.PutUint32(b[0:], req)
	binary.LittleEndian.PutUint32(b[4:], flags)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(payload)))
	copy(b[hdrSize:], payload)
	return b
}

// send sends a well-formed message; with REPLY_ACK negotiated it asks for
// and checks the ack (a request that has a reply of its own is not
// acked).
func (c *conn) send(req uint32, payload []byte, fds ...int) error {
	flags := uint32(flagVersion)
	ack := c.replyAck && !hasReply(req)
	if ack {
		flags |= flagNeedReply
	}
	if err := c.sendRaw(msg(req, flags, payload), fds...); err != nil {
		return err
	}
	if !ack {
		return nil
	}
	v, err := c.recvU64(req, 3*time.Second)
	if err != nil {
		return err
	}
	if v != 0 {
		return &ackError{req: req, v: v}
	}
	return nil
}

// ackError: the backend answered a request with a non-zero ack: refused.
type ackError struct {
	req uint32
	v   uint64
}

func (e *ackError) Error() string { return fmt.Sprintf("request %d refused (ack %d)", e.req, e.v) }

func hasReply(req uint32) bool {
	switch req {
	case reqGetFeatures, reqGetProtocolFeatures, reqGetVringBase, reqGetQueueNum:
		return true
	}
	return false
}

// recv reads one reply: its header and payload. Fds that come with it are
// closed.
func (c *conn) recv(timeout time.Duration) (req, flags uint32, payload []byte, err error) {
	c.uc.SetReadDeadline(time.Now().Add(timeout))
	hdr := make([]byte, hdrSize)
	if err = c.readFull(hdr); err != nil {
		return
	}
	req = binary.LittleEndian.Uint32(hdr[0:])
	flags = binary.LittleEndian.Uint32(hdr[4:])
	size := binary.LittleEndian.Uint32(hdr[8:])
	if size > 4096 {
		err = fmt.Errorf("reply to %d: payload size %d", req, size)
		return
	}
	payload = make([]byte, size)
	err = c.readFull(payload)
	return
}

func (c *conn) readFull(b []byte) error {
	oob := make([]byte, unix.CmsgSpace(4*8))
	for len(b) > 0 {
		n, oobn, _, _, err := c.uc.ReadMsgUnix(b, oob)
		if oobn > 0 {
			closeRights(oob[:oobn])
		}
		if n == 0 && err == nil {
			return errClosed
		}
		if err != nil {
			if isClosedErr(err) {
				return errClosed
			}
			return err
		}
		b = b[n:]
	}
	return nil
}

func closeRights(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		if fds, err := unix.ParseUnixRights(&m); err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}
}

func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE)
}

// recvU64 reads the reply to req whose payload is one u64.
func (c *conn) recvU64(req uint32, timeout time.Duration) (uint64, error) {
	r, flags, p, err := c.recv(timeout)
	if err != nil {
		return 0, err
	}
	if r != req || flags&flagReply == 0 || len(p) != 8 {
		return 0, fmt.Errorf("reply to %d: got request %d flags %#x size %d", req, r, flags, len(p))
	}
	return binary.LittleEndian.Uint64(p), nil
}

func (c *conn) getU64(req uint32) (uint64, error) {
	if err := c.sendRaw(msg(req, flagVersion, nil)); err != nil {
		return 0, err
	}
	return c.recvU64(req, 3*time.Second)
}

func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func vringState(idx, num uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, idx)
	return binary.LittleEndian.AppendUint32(b, num)
}

func vringAddr(idx uint32, desc, used, avail uint64) []byte {
	b := binary.LittleEndian.AppendUint32(nil, idx)
	b = binary.LittleEndian.AppendUint32(b, 0) // flags: no logging
	b = binary.LittleEndian.AppendUint64(b, desc)
	b = binary.LittleEndian.AppendUint64(b, used)
	b = binary.LittleEndian.AppendUint64(b, avail)
	return binary.LittleEndian.AppendUint64(b, 0) // log_guest_addr
}

// region is one entry of SET_MEM_TABLE.
type region struct {
	gpa, size, uaddr, offset uint64
}

func memTable(rs []region) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(rs)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, r := range rs {
		b = binary.LittleEndian.AppendUint64(b, r.gpa)
		b = binary.LittleEndian.AppendUint64(b, r.size)
		b = binary.LittleEndian.AppendUint64(b, r.uaddr)
		b = binary.LittleEndian.AppendUint64(b, r.offset)
	}
	return b
}

// alive asks GET_FEATURES: nil if answered, errClosed if the backend ended
// the connection, another error if it neither answered nor closed.
func (c *conn) alive() error {
	_, err := c.getU64(reqGetFeatures)
	return err
}

// eventfd makes an eventfd for a ring's kick or call.
func eventfd() (*os.File, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "eventfd"), nil
}
