package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"multifs/perms"
)

func TestAllowOther(t *testing.T) {
	private := perms.Perms{Mode: 0o600, Dirmode: 0o2700}
	group := perms.Perms{Mode: 0o660, Dirmode: 0o2770}
	world := perms.Perms{Mode: 0o666, Dirmode: 0o2777}
	// Only the directories open: still others' business.
	dirOnly := perms.Perms{Mode: 0o600, Dirmode: 0o2711}
	const granted = "user_allow_other\n"
	tests := []struct {
		name    string
		p       perms.Perms
		euid    int
		conf    string
		want    bool
		wantErr bool
	}{
		{"root, private modes", private, 0, "", false, false},
		{"root, private modes, granted conf", private, 0, granted, false, false},
		{"root, group modes", group, 0, "", true, false},
		{"root, world modes", world, 0, "", true, false},
		{"root, only dirmode open", dirOnly, 0, "", true, false},

		{"user, private, no conf", private, 1000, "", false, false},
		{"user, private, granted", private, 1000, granted, true, false},
		{"user, group, granted", group, 1000, granted, true, false},
		{"user, world, granted", world, 1000, granted, true, false},
		{"user, group, no conf", group, 1000, "", false, true},
		{"user, world, no conf", world, 1000, "", false, true},
		{"user, only dirmode open, no conf", dirOnly, 1000, "", false, true},

		{"Debian's default conf (commented out)", group, 1000, "# user_allow_other - ...\n#user_allow_other\n", false, true},
		{"commented out, private", private, 1000, "#user_allow_other\n", false, false},
		{"leading and trailing blanks", private, 1000, "  \tuser_allow_other \t\n", true, false},
		{"trailing comment", group, 1000, "user_allow_other # so root can look\n", true, false},
		{"among other lines", private, 1000, "mount_max = 1000\nuser_allow_other\n", true, false},
		{"no newline at the end", private, 1000, "mount_max = 1000\nuser_allow_other", true, false},
		{"CRLF line", private, 1000, "user_allow_other\r\n", true, false},
		{"a longer word", group, 1000, "user_allow_others\n", false, true},
		{"a word before it", group, 1000, "no user_allow_other\n", false, true},
		{"with a value", group, 1000, "user_allow_other = 1\n", false, true},
	}
	for _, tc := range tests {
		got, err := allowOther(tc.p, tc.euid, tc.conf)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%s: allowOther = %v, nil; want an error", tc.name, got)
			} else if !strings.Contains(err.Error(), "user_allow_other") || !strings.Contains(err.Error(), "allow_other") {
				t.Errorf("%s: error %q does not say what to do", tc.name, err)
			}
			if got {
				t.Errorf("%s: allowOther = true with an error", tc.name)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: allowOther = %v, %v; want %v, nil", tc.name, got, err, tc.want)
		}
	}
}

// The error names the modes that need allow_other, as checkAllowOther's did.
func TestAllowOtherErrorNamesModes(t *testing.T) {
	_, err := allowOther(perms.Perms{Mode: 0o660, Dirmode: 0o2770}, 1000, "")
	if err == nil || !strings.Contains(err.Error(), "0660") || !strings.Contains(err.Error(), "2770") {
		t.Fatalf("error %v does not name mode 0660 and dirmode 2770", err)
	}
}

func TestReadFuseConf(t *testing.T) {
	saved := fuseConfPath
	defer func() { fuseConfPath = saved }()
	dir := t.TempDir()

	fuseConfPath = filepath.Join(dir, "fuse.conf")
	const text = "# comment\nuser_allow_other\n"
	if err := os.WriteFile(fuseConfPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readFuseConf(); got != text {
		t.Errorf("readFuseConf = %q, want %q", got, text)
	}

	// Missing or unreadable: fusermount3 grants nothing, and neither do we.
	fuseConfPath = filepath.Join(dir, "missing")
	if got := readFuseConf(); got != "" {
		t.Errorf("readFuseConf of a missing file = %q, want \"\"", got)
	}
	fuseConfPath = dir
	if got := readFuseConf(); got != "" {
		t.Errorf("readFuseConf of a directory = %q, want \"\"", got)
	}
}
