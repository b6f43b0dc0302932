package virtq

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Bounds on what a frontend may make the daemon map.
const (
	// MaxRegions is the most regions one memory table may have, as
	// QEMU's VHOST_MEMORY_BASELINE_NREGIONS.
	MaxRegions = 8
	// MaxMemory bounds the regions' total size. Pages the daemon writes
	// to (received frames) are charged to it, so this bounds what a
	// frontend can make it allocate by posting buffers everywhere.
	MaxMemory = 64 << 30
)

// Region is one guest memory region: its bytes, and the addresses its
// first byte has in the guest (descriptors carry those) and in the
// frontend's address space (ring addresses carry those).
type Region struct {
	GuestAddr uint64
	UserAddr  uint64
	Data      []byte
}

// Memory is a frontend's memory table. A Memory is not changed once
// made; a new table is a new Memory.
type Memory struct {
	regions  []Region
	mappings [][]byte // to unmap
}

// Errors of a memory table.
var (
	ErrTooManyRegions = errors.New("too many memory regions")
	ErrRegion         = errors.New("bad memory region")
)

// NewMemory checks regions and returns the table. Regions must not be
// empty, wrap, or overlap (in either address space), and the bytes'
// address must agree with UserAddr modulo 8, so that a ring field
// aligned for the frontend is aligned for atomic access here.
func NewMemory(regions []Region) (*Memory, error) {
	if len(regions) == 0 || len(regions) > MaxRegions {
		return nil, ErrTooManyRegions
	}
	var total uint64
	for i, r := range regions {
		n := uint64(len(r.Data))
		if n == 0 || r.GuestAddr+n < r.GuestAddr || r.UserAddr+n < r.UserAddr {
			return nil, fmt.Errorf("%w %d: empty or wrapping", ErrRegion, i)
		}
		if (uintptr(unsafe.Pointer(unsafe.SliceData(r.Data)))-uintptr(r.UserAddr))%8 != 0 {
			return nil, fmt.Errorf("%w %d: misaligned", ErrRegion, i)
		}
		total += n
		if total > MaxMemory {
			return nil, fmt.Errorf("%w: more than %d bytes in all", ErrRegion, uint64(MaxMemory))
		}
		for j := 0; j < i; j++ {
			o := regions[j]
			on := uint64(len(o.Data))
			if r.GuestAddr < o.GuestAddr+on && o.GuestAddr < r.GuestAddr+n ||
				r.UserAddr < o.UserAddr+on && o.UserAddr < r.UserAddr+n {
				return nil, fmt.Errorf("%w %d: overlaps region %d", ErrRegion, i, j)
			}
		}
	}
	return &Memory{regions: append([]Region(nil), regions...)}, nil
}

// RegionDesc is a region as SET_MEM_TABLE describes it: its addresses,
// size, and where it starts in the file whose descriptor came with it.
type RegionDesc struct {
	GuestAddr, Size, UserAddr, MmapOffset uint64
}

// Filesystem magic numbers of the only files a region may come from:
// memory, never a file whose page faults another process serves (FUSE)
// or that may block.
const (
	tmpfsMagic     = 0x01021994
	hugetlbfsMagic = 0x958458f6
)

// Map maps each region's file, fds[i] for descs[i], and returns the
// table. The fds stay the caller's. A region must lie in its file
// (fstat), which must be a regular file in memory (tmpfs, memfd or
// hugetlbfs), and must keep to NewMemory's rules. A frontend can still
// shrink an unsealed file under a mapping: the data path reads guest
// memory with faults turned into errors (Guard).
func Map(descs []RegionDesc, fds []int) (*Memory, error) {
	if len(descs) == 0 || len(descs) > MaxRegions {
		return nil, ErrTooManyRegions
	}
	if len(fds) != len(descs) {
		return nil, fmt.Errorf("%w: %d regions, %d descriptors", ErrRegion, len(descs), len(fds))
	}
	m := &Memory{}
	ok := false
	defer func() {
		if !ok {
			m.Unmap()
		}
	}()
	regions := make([]Region, 0, len(descs))
	for i, d := range descs {
		var st unix.Stat_t
		if err := unix.Fstat(fds[i], &st); err != nil {
			return nil, fmt.Errorf("%w %d: %v", ErrRegion, i, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return nil, fmt.Errorf("%w %d: not a regular file", ErrRegion, i)
		}
		var sfs unix.Statfs_t
		if err := unix.Fstatfs(fds[i], &sfs); err != nil {
			return nil, fmt.Errorf("%w %d: %v", ErrRegion, i, err)
		}
		if sfs.Type != tmpfsMagic && sfs.Type != hugetlbfsMagic {
			return nil, fmt.Errorf("%w %d: not shared memory (filesystem 0x%x)", ErrRegion, i, sfs.Type)
		}
		end := d.MmapOffset + d.Size
		if d.Size == 0 || d.Size > MaxMemory || d.MmapOffset > MaxMemory || end > uint64(st.Size) {
			return nil, fmt.Errorf("%w %d: offset %d size %d outside its file of %d bytes", ErrRegion, i, d.MmapOffset, d.Size, st.Size)
		}
		if d.MmapOffset%8 != 0 || d.UserAddr%8 != 0 || d.GuestAddr%8 != 0 {
			return nil, fmt.Errorf("%w %d: misaligned", ErrRegion, i)
		}
		length := end
		align := uint64(unix.Getpagesize())
		if sfs.Type == hugetlbfsMagic && st.Blksize > 0 {
			align = uint64(st.Blksize)
		}
		length = (length + align - 1) &^ (align - 1)
		b, err := unix.Mmap(fds[i], 0, int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return nil, fmt.Errorf("%w %d: mmap: %v", ErrRegion, i, err)
		}
		m.mappings = append(m.mappings, b)
		regions = append(regions, Region{GuestAddr: d.GuestAddr, UserAddr: d.UserAddr, Data: b[d.MmapOffset:end:end]})
	}
	checked, err := NewMemory(regions)
	if err != nil {
		return nil, err
	}
	m.regions = checked.regions
	ok = true
	return m, nil
}

// Unmap unmaps what Map mapped. Nobody may use the memory any more.
func (m *Memory) Unmap() {
	if m == nil {
		return
	}
	for _, b := range m.mappings {
		unix.Munmap(b)
	}
	m.mappings = nil
	m.regions = nil
}

// Size is the regions' total size.
func (m *Memory) Size() uint64 {
	var n uint64
	for _, r := range m.regions {
		n += uint64(len(r.Data))
	}
	return n
}

// guest returns the bytes from guest physical address addr: at most n,
// fewer if addr's region ends first; nil if no region holds addr.
func (m *Memory) guest(addr, n uint64) []byte {
	for i := range m.regions {
		r := &m.regions[i]
		off := addr - r.GuestAddr
		if addr >= r.GuestAddr && off < uint64(len(r.Data)) {
			n = min(n, uint64(len(r.Data))-off)
			return r.Data[off : off+n : off+n]
		}
	}
	return nil
}

// guestExact returns exactly n bytes from guest address addr, all in one
// region, or nil.
func (m *Memory) guestExact(addr, n uint64) []byte {
	if b := m.guest(addr, n); uint64(len(b)) == n {
		return b
	}
	return nil
}

// user returns exactly n bytes at the frontend's address addr, all in
// one region, or nil.
func (m *Memory) user(addr, n uint64) []byte {
	for i := range m.regions {
		r := &m.regions[i]
		off := addr - r.UserAddr
		if addr >= r.UserAddr && off < uint64(len(r.Data)) && n <= uint64(len(r.Data))-off {
			return r.Data[off : off+n : off+n]
		}
	}
	return nil
}
