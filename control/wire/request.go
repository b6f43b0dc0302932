// Package wire is the wire format multifs speaks with its peers, as bytes:
// the vde-2 switch protocol's connection request (what a client sends,
// libvdeplug's struct request_v3) and reply (a struct sockaddr_un), and
// the ptp ack byte of the seqpacket entries (ack.go). It parses what a
// hostile client may send, bounded and every field checked, and is fuzzed
// (FuzzParseRequest). Its one piece of I/O is ReadRequest (read.go), the
// bounded read of a request off a connection that the daemon and the test
// switch share.
package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// HandshakeTimeout bounds a handshake, on either side: how long a server
// waits for a client's request, and a client for the reply or the ack.
const HandshakeTimeout = 5 * time.Second

// The vde-2 switch protocol's connection request, libvdeplug's struct
// request_v3, packed: magic, version, type, the client's data socket (a
// struct sockaddr_un), then up to 128 bytes of description. Fields
// are in the host's byte order; on every platform multifs runs on that is
// little-endian, as the request is produced by the same kernel's clients.
const (
	reqMagic      = 0xfeedface
	reqVersion    = 3
	ReqNewControl = 0 // REQ_NEW_CONTROL
	sunPathLen    = 108
	SockaddrLen   = 2 + sunPathLen // struct sockaddr_un on Linux: the switch's reply
	HeaderLen     = 4 + 4 + 4 + SockaddrLen
	maxDescr      = 128
	// MaxRequestLen is the largest request a well-behaved client sends.
	MaxRequestLen = HeaderLen + maxDescr
)

var byteOrder = binary.LittleEndian

// Request is a parsed vde-2 connection request.
type Request struct {
	Type        uint32 // low byte of the type field
	Port        uint32 // what old clients put in the upper bits
	SockPath    string // the client's data socket
	Description string
}

// Request parse errors; each names what a hostile or broken client did.
var (
	ErrShortRequest = errors.New("request shorter than the vde-2 header")
	ErrLongRequest  = errors.New("request longer than the vde-2 maximum")
	ErrBadMagic     = errors.New("bad magic")
	ErrBadVersion   = errors.New("unsupported version")
	ErrBadType      = errors.New("unsupported request type")
	ErrBadFamily    = errors.New("data socket address is not AF_UNIX")
	ErrBadPath      = errors.New("bad data socket path")
)

// ParseRequest validates and decodes one request. It never panics, whatever
// the input.
func ParseRequest(b []byte) (Request, error) {
	if len(b) < HeaderLen {
		return Request{}, fmt.Errorf("%w: %d bytes", ErrShortRequest, len(b))
	}
	if len(b) > MaxRequestLen {
		return Request{}, fmt.Errorf("%w: %d bytes", ErrLongRequest, len(b))
	}
	if m := byteOrder.Uint32(b[0:]); m != reqMagic {
		return Request{}, fmt.Errorf("%w 0x%08x", ErrBadMagic, m)
	}
	if v := byteOrder.Uint32(b[4:]); v != reqVersion {
		return Request{}, fmt.Errorf("%w %d", ErrBadVersion, v)
	}
	typ := byteOrder.Uint32(b[8:])
	r := Request{Type: typ & 0xff, Port: typ >> 8}
	if r.Type != ReqNewControl {
		return Request{}, fmt.Errorf("%w %d", ErrBadType, r.Type)
	}
	sa := b[12 : 12+SockaddrLen]
	if fam := byteOrder.Uint16(sa); fam != 1 /* AF_UNIX */ {
		return Request{}, fmt.Errorf("%w (family %d)", ErrBadFamily, fam)
	}
	path := sa[2:]
	if path[0] == 0 {
		return Request{}, fmt.Errorf("%w: abstract or empty address", ErrBadPath)
	}
	end := bytes.IndexByte(path, 0)
	if end < 0 {
		return Request{}, fmt.Errorf("%w: not NUL-terminated", ErrBadPath)
	}
	r.SockPath = string(path[:end])
	if r.SockPath[0] != '/' {
		return Request{}, fmt.Errorf("%w: %q is not absolute", ErrBadPath, r.SockPath)
	}
	d := b[HeaderLen:]
	if i := bytes.IndexByte(d, 0); i >= 0 {
		d = d[:i]
	}
	r.Description = string(d)
	return r, nil
}

// Encode renders the request as a client sends it.
func (r Request) Encode() []byte {
	b := make([]byte, HeaderLen, MaxRequestLen)
	byteOrder.PutUint32(b[0:], reqMagic)
	byteOrder.PutUint32(b[4:], reqVersion)
	byteOrder.PutUint32(b[8:], r.Type&0xff|r.Port<<8)
	putSockaddr(b[12:12+SockaddrLen], r.SockPath)
	d := r.Description
	if len(d) > maxDescr {
		d = d[:maxDescr]
	}
	return append(b, d...)
}

// putSockaddr writes a struct sockaddr_un for path into b (SockaddrLen bytes).
func putSockaddr(b []byte, path string) {
	byteOrder.PutUint16(b, 1)
	copy(b[2:2+sunPathLen-1], path)
}

// EncodeSockaddr returns the 110-byte sockaddr_un the server replies with.
func EncodeSockaddr(path string) []byte {
	b := make([]byte, SockaddrLen)
	putSockaddr(b, path)
	return b
}

// DecodeSockaddr parses the server's reply.
func DecodeSockaddr(b []byte) (string, error) {
	if len(b) != SockaddrLen || byteOrder.Uint16(b) != 1 {
		return "", fmt.Errorf("%w: bad reply", ErrBadPath)
	}
	p := b[2:]
	end := bytes.IndexByte(p, 0)
	if end <= 0 {
		return "", fmt.Errorf("%w: bad reply path", ErrBadPath)
	}
	return string(p[:end]), nil
}
