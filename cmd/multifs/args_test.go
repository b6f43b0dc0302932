package main

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		check   func(*options) bool
		wantErr string
	}{
		{"path", []string{"/tmp/vm1"}, func(o *options) bool { return o.path == "/tmp/vm1" && !o.foreground }, ""},
		{"default path", nil, func(o *options) bool { return strings.HasPrefix(o.path, "/tmp/vdenode_") }, ""},
		{"flags after path", []string{"/tmp/vm1", "-f"}, func(o *options) bool { return o.foreground }, ""},
		{"-o", []string{"-o", "mode=0660,grp=0", "/x"}, func(o *options) bool {
			return o.spec.ModeSet && o.spec.Mode == 0o660 && o.spec.Group == "0"
		}, ""},
		{"-o glued", []string{"-omode=0666", "/x"}, func(o *options) bool { return o.spec.Mode == 0o666 }, ""},
		{"as mount.fuse3 runs it", []string{"vm1", "/tmp/vm1", "-o", "rw,nosuid,nodev,noatime,mode=0660,nofail,_netdev,x-systemd.automount,comment=x,defaults"},
			func(o *options) bool {
				return o.source == "vm1" && o.path == "/tmp/vm1" && o.spec.Mode == 0o660 && o.spec.ModeSet && !o.foreground
			}, ""},
		{"ro refused", []string{"vm1", "/tmp/vm1", "-o", "ro"}, nil, "read-only"},
		{"empty SOURCE", []string{"", "/tmp/vm1"}, nil, "SOURCE is empty"},
		{"three operands", []string{"a", "/b", "/c"}, nil, "at most"},
		{"netnode keys", []string{"multi:///tmp/m[hashsize=128/hashseed=1/expiretime=60/mode=0600]"}, func(o *options) bool {
			return o.path == "/tmp/m" && len(o.noEffect) == 3 && o.noEffect[0] == "hashsize=128" && o.spec.ModeSet
		}, ""},
		{"netnode keys in -o", []string{"-o", "expiretime=60", "/x"}, func(o *options) bool { return len(o.noEffect) == 1 }, ""},
		{"generic options only in -o", []string{"multi:///tmp/m[noatime]"}, nil, "not KEY=VALUE"},
		{"url", []string{"multi:///tmp/m[mode=0666/dirmode=02750]"}, func(o *options) bool {
			return o.path == "/tmp/m" && o.spec.Mode == 0o666 && o.spec.Dirmode == 0o2750 && o.spec.DirmodeSet
		}, ""},
		{"url no path", []string{"multi://"}, func(o *options) bool { return strings.HasPrefix(o.path, "/tmp/vdenode_") }, ""},
		{"url options only", []string{"multi://[mode=0600]"}, func(o *options) bool {
			return strings.HasPrefix(o.path, "/tmp/vdenode_") && o.spec.ModeSet
		}, ""},
		{"long flags", []string{"--mode=0640", "--dirmode", "0750", "--sockdir", "/run/x", "--foreground", "/x"}, func(o *options) bool {
			return o.spec.Mode == 0o640 && o.spec.Dirmode == 0o750 && o.sockdir == "/run/x" && o.foreground
		}, ""},
		{"relative made absolute", []string{"rel"}, func(o *options) bool { return strings.HasPrefix(o.path, "/") && strings.HasSuffix(o.path, "/rel") }, ""},
		{"tap host", []string{"--host", "tap://tap0", "/x"}, func(o *options) bool { return o.tap == "tap0" }, ""},
		{"bad host", []string{"--host", "vde:///x", "/x"}, nil, "want tap://NAME"},
		{"help", []string{"-h"}, func(o *options) bool { return o.help }, ""},
		{"version", []string{"--version"}, func(o *options) bool { return o.version }, ""},
		{"later -o wins", []string{"-o", "mode=0600", "/x", "--mode", "0640", "-omode=0660"}, func(o *options) bool { return o.spec.Mode == 0o660 }, ""},
		{"-- ends flags", []string{"--", "-f"}, func(o *options) bool { return !o.foreground && strings.HasSuffix(o.path, "/-f") }, ""},
		{"log level panic refused", []string{"--log-level", "panic", "/x"}, nil, "want trace, debug, info, warn, error"},
		{"unknown shorthand", []string{"-x", "/x"}, nil, "unknown shorthand flag: 'x'"},
		{"bad mode", []string{"-o", "mode=999", "/x"}, nil, "mode=999"},
		{"empty mode", []string{"-o", "mode=", "/x"}, nil, "mode: empty"},
		{"unknown key", []string{"-o", "foo=1", "/x"}, nil, `unknown option "foo"`},
		{"unknown key in url", []string{"multi:///x[bogus=1]"}, nil, `unknown option "bogus"`},
		{"unterminated url options", []string{"multi:///x[mode=0600"}, nil, "must end with"},
		{"not key=value", []string{"-o", "mode", "/x"}, nil, "not KEY=VALUE"},
		{"unknown flag", []string{"--frobnicate", "/x"}, nil, "unknown flag: --frobnicate"},
		{"missing value", []string{"/x", "--sockdir"}, nil, "flag needs an argument: --sockdir"},
		{"other url scheme", []string{"vde:///x"}, nil, "only multi://"},
		{"bad log format", []string{"--log-format", "xml", "/x"}, nil, "--log-format"},
		{"root", []string{"/"}, nil, "cannot be /"},
		{"dedup default", []string{"/x"}, func(o *options) bool { return o.dedup == time.Second && !o.dedupSet }, ""},
		{"dedup in -o", []string{"-o", "mode=0600,dedup=250ms", "/x"}, func(o *options) bool { return o.dedup == 250*time.Millisecond && o.dedupSet }, ""},
		{"dedup off", []string{"-o", "dedup=off", "/x"}, func(o *options) bool { return o.dedup == 0 && o.dedupSet }, ""},
		{"dedup in url", []string{"multi:///tmp/m[dedup=2s/mode=0600]"}, func(o *options) bool { return o.dedup == 2*time.Second && o.path == "/tmp/m" }, ""},
		{"dedup off in url", []string{"multi:///tmp/m[dedup=off]"}, func(o *options) bool { return o.dedup == 0 && o.dedupSet }, ""},
		{"dedup not a duration", []string{"-o", "dedup=fast", "/x"}, nil, "dedup=fast: want a duration"},
		{"dedup without unit", []string{"-o", "dedup=5", "/x"}, nil, "dedup=5: want a duration"},
		{"dedup zero", []string{"-o", "dedup=0s", "/x"}, nil, "dedup=0s: want a duration over 0"},
		{"dedup negative", []string{"multi:///x[dedup=-1s]"}, nil, "dedup=-1s"},
		{"dedup too long", []string{"-o", "dedup=2m", "/x"}, nil, "up to 1m0s"},
		{"dedup empty", []string{"-o", "dedup=", "/x"}, nil, "dedup=: want"},
		{"dedup On", []string{"-o", "dedup=On", "/x"}, nil, "or off"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseArgs(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				if !errors.Is(err, errUsage) {
					t.Fatalf("err %v is not a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(o) {
				t.Fatalf("unexpected options %+v", o)
			}
		})
	}
}

// TestArgvRoundTrip: what a daemonized multifs re-executes itself with
// parses back to the same options, with every path already absolute (the
// child runs in /, where a relative path would name another file).
func TestArgvRoundTrip(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, args := range [][]string{
		{"vm1", "--log-file", "x.log", "--sockdir", ".s"},
		{"multi://vm2[mode=0660/dirmode=02750/grp=0]", "--log-level", "debug", "--log-format", "json"},
		{"-o", "mode=0666", "--host", "tap://tap0", "-f", "/tmp/x"},
		{"--", "-odd-name"},
		{"label", "rel/vm3", "-o", "rw,nosuid,hashsize=64"},
		{"-o", "dedup=off", "/tmp/x"},
		{"multi:///tmp/x[dedup=1500ms]"},
	} {
		o, err := parseArgs(args)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		for _, p := range []string{o.path, o.sockdir, o.logFile} {
			if p != "" && !filepath.IsAbs(p) {
				t.Errorf("%q: %q is not absolute", args, p)
			}
		}
		again, err := parseArgs(o.argv())
		if err != nil {
			t.Fatalf("%q: argv %q: %v", args, o.argv(), err)
		}
		if !reflect.DeepEqual(o, again) {
			t.Errorf("%q: argv %q parses to %+v, want %+v", args, o.argv(), *again, *o)
		}
	}
}
