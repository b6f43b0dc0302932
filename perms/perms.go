// Package perms owns libvdeplug_multi's security options — mode, dirmode
// and grp — and turns them into the concrete modes and owners of everything
// multifs exposes: the FUSE tree, the socket directory and every socket in
// it.
//
// The rules follow libvdeplug_multi: mode defaults to 0600 and loses its x
// bits; dirmode defaults to 02700, or is derived from mode when only mode is
// given; grp names the group (by name or number) that owns it all.
package perms

import (
	"fmt"
	"os/user"
	"strconv"
)

// Defaults, libvdeplug_multi's.
const (
	DefaultMode    = 0o600
	DefaultDirmode = 0o2700
)

// Spec is the user's request, as parsed from -o, flags or a multi:// URL.
// Zero-valued "Set" fields mean "not given".
type Spec struct {
	Mode       uint32
	ModeSet    bool
	Dirmode    uint32
	DirmodeSet bool
	Group      string // name or number; empty = the daemon's own group
}

// Perms are the resolved permissions.
type Perms struct {
	Mode     uint32 // for sockets and, via its r/w bits, stats and close files
	Dirmode  uint32 // for directories (mount root, host/, links/, links/N/, socket dir)
	UID      uint32 // owner of everything: the daemon's user
	GID      uint32 // group of everything
	GroupSet bool   // an explicit grp was given
}

// ParseMode parses an octal permission value for the option named key.
func ParseMode(key, s string) (uint32, error) {
	if s == "" {
		return 0, fmt.Errorf("%s: empty value, want an octal mode such as 0660", key)
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("%s=%s: not an octal mode (want e.g. 0660)", key, s)
	}
	if v > 0o7777 {
		return 0, fmt.Errorf("%s=%s: out of range (at most 07777)", key, s)
	}
	return uint32(v), nil
}

// DeriveDirmode computes the directory mode from a socket mode exactly as
// libvdeplug_multi does: setgid, plus x for every class that has r or w.
func DeriveDirmode(mode uint32) uint32 {
	return 0o2000 | mode | (mode&0o444)>>2 | (mode&0o222)>>1
}

// Resolve turns a Spec into Perms for a daemon running as uid/gid.
func Resolve(s Spec, uid, gid uint32) (Perms, error) {
	p := Perms{Mode: DefaultMode, Dirmode: DefaultDirmode, UID: uid, GID: gid}
	if s.ModeSet {
		p.Mode = s.Mode &^ 0o111
		p.Dirmode = DeriveDirmode(p.Mode)
	}
	if s.DirmodeSet {
		p.Dirmode = s.Dirmode
	}
	if s.Group != "" {
		g, err := LookupGroup(s.Group)
		if err != nil {
			return Perms{}, err
		}
		p.GID = g
		p.GroupSet = true
	}
	return p, nil
}

// LookupGroup resolves a group name or a decimal number.
func LookupGroup(name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("grp=%s: no such group", name)
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("grp=%s: bad gid %q", name, g.Gid)
	}
	return uint32(n), nil
}

// StatsMode is the mode of a read-only stats file: the read bits of mode.
func (p Perms) StatsMode() uint32 { return p.Mode & 0o444 }

// CloseMode is the mode of a write-only control file: the write bits of mode.
func (p Perms) CloseMode() uint32 { return p.Mode & 0o222 }

// SocketMode is the mode of every listening and data socket.
func (p Perms) SocketMode() uint32 { return p.Mode }

// DirMode is the mode of every directory, the FUSE ones and the socket dir.
func (p Perms) DirMode() uint32 { return p.Dirmode }

// NeedsAllowOther reports whether anyone but the owner may use the tree, in
// which case the FUSE mount needs allow_other.
func (p Perms) NeedsAllowOther() bool {
	return (p.Mode|p.Dirmode)&0o077 != 0
}

// SockDirMode is the mode of the socket directory: the owner's rwx, and for
// group and others at most r and x as dirmode gives them (and its setgid
// bit, so the sockets take the directory's group). Joining needs x there,
// never w: whoever could write it could rename ctl away and bind their own.
func (p Perms) SockDirMode() uint32 { return 0o700 | p.Dirmode&0o2055 }
