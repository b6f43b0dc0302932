package main

import (
	"fmt"
	"os"
	"strings"

	"multifs/perms"
)

// fuseConfPath is where fusermount3 looks for user_allow_other (a
// variable so that tests can point it elsewhere).
var fuseConfPath = "/etc/fuse.conf"

// allowOther decides whether to mount with allow_other.
//
// Root may always use it, and root's own tree is reachable by root anyway,
// so root asks for it only when the modes open the tree to others. A
// non-root daemon asks for it whenever fusermount3 will grant it: without
// it not even root can reach the tree, and default_permissions keeps the
// kernel enforcing the modes, so nobody else gains anything. Where it is
// not granted, the modes that need it are refused in words rather than by
// fusermount3's terse failure.
func allowOther(p perms.Perms, euid int, fuseConf string) (bool, error) {
	if euid == 0 {
		return p.NeedsAllowOther(), nil
	}
	if userAllowOther(fuseConf) {
		return true, nil
	}
	if p.NeedsAllowOther() {
		return false, fmt.Errorf("mode %04o/dirmode %04o gives other users access, which needs the FUSE option allow_other, "+
			"and /etc/fuse.conf does not contain user_allow_other (add it, or run as root)", p.Mode, p.Dirmode)
	}
	return false, nil
}

// userAllowOther reports whether fuse.conf text grants user_allow_other,
// read as fusermount3 reads it: '#' starts a comment, surrounding blanks
// do not count, and the option stands alone on its line.
func userAllowOther(conf string) bool {
	for _, line := range strings.Split(conf, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if strings.TrimSpace(line) == "user_allow_other" {
			return true
		}
	}
	return false
}

// readFuseConf returns the text of /etc/fuse.conf, or "" if it cannot be
// read: fusermount3 then grants nothing either.
func readFuseConf() string {
	b, err := os.ReadFile(fuseConfPath)
	if err != nil {
		return ""
	}
	return string(b)
}
