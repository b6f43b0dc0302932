package handoff

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// Proc is what /proc/PID/stat says of a process that matters here.
type Proc struct {
	State byte // R, S, D, Z, ...
	PPID  int
	PGID  int
	SID   int
}

// maxStat bounds a read of /proc/PID/stat (its comm is at most 16 bytes;
// the whole line a few hundred).
const maxStat = 4096

// ReadProc reads /proc/PID/stat.
func ReadProc(pid int) (Proc, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Proc{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStat))
	if err != nil {
		return Proc{}, err
	}
	return ParseStat(b)
}

// ParseStat parses a /proc/PID/stat line: "pid (comm) state ppid pgrp
// session ...". comm may hold spaces and parentheses (a process names
// itself), so the fields are counted from the last ')'.
func ParseStat(b []byte) (Proc, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Proc{}, errors.New("stat: no ')'")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 4 || len(f[0]) != 1 {
		return Proc{}, errors.New("stat: too few fields")
	}
	p := Proc{State: f[0][0]}
	for j, dst := range []*int{&p.PPID, &p.PGID, &p.SID} {
		n, err := strconv.Atoi(string(f[j+1]))
		if err != nil {
			return Proc{}, fmt.Errorf("stat: field %d: %w", j+4, err)
		}
		*dst = n
	}
	return p, nil
}

// maxDepth bounds the walk up a process tree.
const maxDepth = 64

// Descends reports whether pid is ancestor or one of its descendants, as
// far as read (ReadProc) tells now: pid is in the session ancestor made
// (ancestor was started with Setsid, so only what it started is in it), or
// one of pid's parents is ancestor. A descendant that left the session and
// whose parent died since (it was given to init) is not found.
func Descends(pid, ancestor int, read func(int) (Proc, error)) bool {
	if pid == ancestor {
		return true
	}
	p, err := read(pid)
	if err != nil {
		return false
	}
	if p.SID == ancestor {
		return true
	}
	for i := 0; i < maxDepth && p.PPID > 1; i++ {
		if p.PPID == ancestor {
			return true
		}
		if p, err = read(p.PPID); err != nil {
			return false
		}
	}
	return false
}

// Session lists the live processes (zombies left out) of session sid.
func Session(sid int, read func(int) (Proc, error)) []int {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil
	}
	var out []int
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil || pid <= 1 {
			continue
		}
		p, err := read(pid)
		if err != nil || p.SID != sid || p.State == 'Z' || p.State == 'X' {
			continue
		}
		out = append(out, pid)
	}
	return out
}
