package perms

import (
	"strings"
	"testing"
)

func TestParseMode(t *testing.T) {
	tests := []struct {
		in      string
		want    uint32
		wantErr string
	}{
		{"0600", 0o600, ""},
		{"600", 0o600, ""},
		{"02770", 0o2770, ""},
		{"0", 0, ""},
		{"", 0, "empty"},
		{"abc", 0, "not an octal"},
		{"0689", 0, "not an octal"},
		{"-1", 0, "not an octal"},
		{"0x1ff", 0, "not an octal"},
		{"17777", 0, "out of range"},
	}
	for _, tc := range tests {
		got, err := ParseMode("mode", tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "mode") {
				t.Errorf("ParseMode(%q) err = %v, want one naming mode and saying %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseMode(%q) = %o, %v; want %o", tc.in, got, err, tc.want)
		}
	}
}

// libvdeplug_multi's examples and the documented derivation.
func TestResolve(t *testing.T) {
	tests := []struct {
		name       string
		spec       Spec
		mode, dir  uint32
		allowOther bool
	}{
		{"defaults", Spec{}, 0o600, 0o2700, false},
		{"mode 0600", Spec{Mode: 0o600, ModeSet: true}, 0o600, 0o2700, false},
		{"mode 0666: everybody", Spec{Mode: 0o666, ModeSet: true}, 0o666, 0o2777, true},
		{"mode 0660: the group", Spec{Mode: 0o660, ModeSet: true}, 0o660, 0o2770, true},
		{"x bits masked", Spec{Mode: 0o777, ModeSet: true}, 0o666, 0o2777, true},
		{"mode 0640", Spec{Mode: 0o640, ModeSet: true}, 0o640, 0o2750, true},
		{"explicit dirmode wins", Spec{Mode: 0o666, ModeSet: true, Dirmode: 0o2750, DirmodeSet: true}, 0o666, 0o2750, true},
		{"dirmode alone", Spec{Dirmode: 0o755, DirmodeSet: true}, 0o600, 0o755, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Resolve(tc.spec, 1000, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if p.Mode != tc.mode || p.Dirmode != tc.dir {
				t.Fatalf("mode %04o dirmode %05o, want %04o %05o", p.Mode, p.Dirmode, tc.mode, tc.dir)
			}
			if p.NeedsAllowOther() != tc.allowOther {
				t.Fatalf("NeedsAllowOther = %v", p.NeedsAllowOther())
			}
			if p.StatsMode() != tc.mode&0o444 || p.CloseMode() != tc.mode&0o222 {
				t.Fatalf("file modes %o %o", p.StatsMode(), p.CloseMode())
			}
		})
	}
}

func TestGroup(t *testing.T) {
	p, err := Resolve(Spec{Group: "4242"}, 0, 0)
	if err != nil || p.GID != 4242 || !p.GroupSet {
		t.Fatalf("numeric group: %+v %v", p, err)
	}
	p, err = Resolve(Spec{Group: "root"}, 5, 5)
	if err != nil || p.GID != 0 {
		t.Fatalf("group root: %+v %v", p, err)
	}
	if _, err := Resolve(Spec{Group: "no-such-group-here"}, 0, 0); err == nil || !strings.Contains(err.Error(), "grp=no-such-group-here") {
		t.Fatalf("unknown group: %v", err)
	}
}
