package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"multifs/multilink"
	"multifs/perms"
)

const usage = `usage: multifs [flags] [PATH | multi://[PATH][[KEY=VALUE[/KEY=VALUE]...]]]
       multifs [flags] SOURCE PATH -o OPTIONS     (as mount(8) runs it)

Serve a VDE multilink (one host, any number of links) whose control
directory is a FUSE mount at PATH (default /tmp/vdenode_$USER).

  -f, --foreground        stay in the foreground (default: daemonize once ready)
  -o KEY=VALUE[,...]      mode=OCTAL, dirmode=OCTAL, grp=GROUP (as in libvdeplug_multi);
                          mount(8)'s generic options (nosuid, noatime, nofail, x-*, ...)
                          are accepted and ignored, ro is refused; the netnode keys
                          hashsize=, hashseed=, expiretime= are accepted with no effect;
                          dedup=DURATION|off (default 1s): while two or more links are open,
                          a frame identical to one another link brought within DURATION is
                          not given to the host; off gives it every copy, as the reference
      --mode OCTAL        permissions of the sockets (default 0600)
      --dirmode OCTAL     permissions of the directories (default 02700, or derived from mode)
      --grp GROUP         group owning the multilink (name or number)
      --sockdir DIR       where the real sockets go (default: PATH's hidden sibling .NAME.multifs)
      --host tap://NAME   open the tap device NAME as the host (one hop less than vde_plug)
      --log-level LEVEL   trace, debug, info, warn, error (default info)
      --log-format FMT    text or json (default text)
      --log-file FILE     append logs to FILE (default: syslog when daemonized, stderr with -f)
      --version           print the version and exit
  -h, --help              print this help and exit

Join:  vde_plug PATH ...          (a link)
       vde_plug PATH/host ...     (the host; qemu: -netdev vde,sock=PATH/host)
Close: echo 1 > PATH/links/N/close
Stop:  fusermount -u PATH, or SIGTERM
`

// options is everything the command line says.
type options struct {
	path       string
	source     string   // SOURCE when run as mount(8) runs a helper: the mount's fsname
	noEffect   []string // options of the reference that mean nothing here, KEY=VALUE
	spec       perms.Spec
	sockdir    string
	tap        string        // NAME of --host tap://NAME: a tap device multifs opens as the host
	dedup      time.Duration // duplicate suppression's window; 0: off
	dedupSet   bool          // dedup= was given
	foreground bool
	logLevel   string
	logFormat  string
	logFile    string
	help       bool
	version    bool
}

// errUsage wraps command-line mistakes.
var errUsage = errors.New("usage")

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// parseArgs reads the command line, with spf13/pflag: flags may come
// before or after PATH, and "--" ends them. mount(8)'s form needs nothing
// of its own: mount.fuse3 runs `multifs SOURCE PATH -o OPTS`, and
// `-oOPTS` glued is pflag's short form. Every -o (and --mode, --dirmode,
// --grp) is applied when it is met, so a later one wins, as with mount(8).
func parseArgs(args []string) (*options, error) {
	o := &options{logLevel: "info", logFormat: "text", dedup: multilink.DefaultDedupWindow}
	fs := daemonFlags(o)
	if err := fs.Parse(args); err != nil {
		var bad *pflag.InvalidValueError
		if errors.As(err, &bad) && errors.Is(bad.Unwrap(), errUsage) {
			return nil, bad.Unwrap() // refused by one of our setters, in its words
		}
		return nil, usageErr("%s", err)
	}
	positional := fs.Args()
	if o.help || o.version {
		return o, nil
	}
	switch len(positional) {
	case 0:
	case 1:
		if err := o.setPath(positional[0]); err != nil {
			return nil, err
		}
	case 2:
		// mount.fuse3 (mount -t fuse.multifs, fstab) runs
		// `multifs SOURCE PATH -o OPTIONS`: SOURCE is a label.
		if positional[0] == "" {
			return nil, usageErr("SOURCE is empty")
		}
		o.source = positional[0]
		if err := o.setPath(positional[1]); err != nil {
			return nil, err
		}
	default:
		return nil, usageErr("PATH, or SOURCE and PATH, at most; got %d: %s", len(positional), strings.Join(positional, " "))
	}
	if o.path == "" {
		o.path = defaultPath()
	}
	abs, err := absPath(o.path)
	if err != nil {
		return nil, err
	}
	o.path = abs
	// Absolute here, so that a daemon re-executed in / (daemonize) and a
	// log reopened later name the same files as the command line did.
	if o.sockdir != "" {
		if o.sockdir, err = absPath(o.sockdir); err != nil {
			return nil, err
		}
	}
	if o.logFile != "" {
		if o.logFile, err = filepath.Abs(o.logFile); err != nil {
			return nil, err
		}
	}
	switch o.logFormat {
	case "text", "json":
	default:
		return nil, usageErr("--log-format %q: want text or json", o.logFormat)
	}
	if !slices.Contains(logLevels, o.logLevel) {
		return nil, usageErr("--log-level %q: want %s", o.logLevel, strings.Join(logLevels, ", "))
	}
	return o, nil
}

// argv is the command line that makes parseArgs return these options again,
// with every path absolute: what a daemonized multifs re-executes itself
// with, in /.
func (o *options) argv() []string {
	a := []string{"--log-level", o.logLevel, "--log-format", o.logFormat}
	if o.logFile != "" {
		a = append(a, "--log-file", o.logFile)
	}
	if o.sockdir != "" {
		a = append(a, "--sockdir", o.sockdir)
	}
	if o.tap != "" {
		a = append(a, "--host", "tap://"+o.tap)
	}
	if o.spec.ModeSet {
		a = append(a, "--mode", fmt.Sprintf("%04o", o.spec.Mode))
	}
	if o.spec.DirmodeSet {
		a = append(a, "--dirmode", fmt.Sprintf("%04o", o.spec.Dirmode))
	}
	if o.spec.Group != "" {
		a = append(a, "--grp", o.spec.Group)
	}
	for _, kv := range o.noEffect {
		a = append(a, "-o", kv)
	}
	if o.dedupSet {
		a = append(a, "-o", "dedup="+dedupString(o.dedup))
	}
	if o.foreground {
		a = append(a, "-f")
	}
	if o.source != "" {
		return append(a, "--", o.source, o.path)
	}
	return append(a, "--", o.path)
}

// setPath takes PATH or a multi:// URL, with an optional [KEY=VALUE/...]
// suffix as in vde_plug URLs.
func (o *options) setPath(arg string) error {
	p := arg
	if rest, ok := strings.CutPrefix(p, "multi://"); ok {
		p = rest
	} else if strings.Contains(p, "://") {
		return usageErr("%s: only multi:// URLs name a multilink", arg)
	}
	if i := strings.IndexByte(p, '['); i >= 0 {
		if !strings.HasSuffix(p, "]") {
			return usageErr("%s: options must end with ']'", arg)
		}
		if err := o.setKeys(p[i+1:len(p)-1], "/", arg); err != nil {
			return err
		}
		p = p[:i]
	}
	o.path = p
	return nil
}

// setKeys applies "k=v<sep>k=v" from the source named src.
func (o *options) setKeys(s, sep, src string) error {
	for _, kv := range strings.Split(s, sep) {
		if kv == "" {
			continue
		}
		if sep == "," {
			if generic, err := mountOption(kv); generic || err != nil {
				if err != nil {
					return err
				}
				continue
			}
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return usageErr("%s: %q is not KEY=VALUE", src, kv)
		}
		if err := o.setKey(k, v, src); err != nil {
			return err
		}
	}
	return nil
}

func (o *options) setKey(k, v, src string) error {
	switch k {
	case "mode":
		m, err := perms.ParseMode("mode", v)
		if err != nil {
			return usageErr("%v", err)
		}
		o.spec.Mode, o.spec.ModeSet = m, true
	case "dirmode":
		m, err := perms.ParseMode("dirmode", v)
		if err != nil {
			return usageErr("%v", err)
		}
		o.spec.Dirmode, o.spec.DirmodeSet = m, true
	case "grp":
		if v == "" {
			return usageErr("grp: empty value, want a group name or number")
		}
		o.spec.Group = v
	case "dedup":
		d, err := parseDedup(v)
		if err != nil {
			return usageErr("%s: %v", src, err)
		}
		o.dedup, o.dedupSet = d, true
	case "hashsize", "hashseed", "expiretime":
		// The reference's netnode keys, which its multi:// accepts
		// too: a URL copied from a working command line must work.
		o.noEffect = append(o.noEffect, k+"="+v)
	default:
		return usageErr("%s: unknown option %q (known: mode, dirmode, grp, dedup)", src, k)
	}
	return nil
}

// parseDedup reads dedup's value: a Go duration (1s, 250ms) up to
// multilink.MaxDedupWindow, or off.
func parseDedup(v string) (time.Duration, error) {
	if v == "off" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 || d > multilink.MaxDedupWindow {
		return 0, fmt.Errorf("dedup=%s: want a duration over 0 and up to %v (like 1s or 200ms), or off", v, multilink.MaxDedupWindow)
	}
	return d, nil
}

func dedupString(d time.Duration) string {
	if d == 0 {
		return "off"
	}
	return d.String()
}

// mountOption takes one of mount(8)'s generic options, which mount.fuse3
// passes on with ours: each means nothing for a tree multifs makes itself
// (it is always nosuid and nodev), except ro, which would make every close
// file useless. It reports whether kv was one.
func mountOption(kv string) (bool, error) {
	switch kv {
	case "ro":
		return true, usageErr("ro: a multilink's tree cannot be read-only (its close files are written); drop ro")
	case "rw", "defaults", "suid", "nosuid", "dev", "nodev", "exec", "noexec",
		"atime", "noatime", "relatime", "norelatime", "strictatime", "nostrictatime",
		"lazytime", "nolazytime", "diratime", "nodiratime", "sync", "async", "dirsync",
		"auto", "noauto", "user", "users", "nouser", "owner", "group", "nofail", "_netdev", "silent", "loud":
		return true, nil
	}
	return strings.HasPrefix(kv, "x-") || strings.HasPrefix(kv, "comment="), nil
}

// defaultPath is libvdeplug_multi's default, /tmp/vdenode_$USER.
func defaultPath() string {
	uid := os.Geteuid()
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return "/tmp/vdenode_" + u.Username
	}
	return "/tmp/vdenode_u" + strconv.Itoa(uid)
}

// absPath makes p absolute the way the reference does: the parent is resolved,
// the last element kept as given.
func absPath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if abs == "/" {
		return "", usageErr("PATH cannot be /")
	}
	dir, base := filepath.Split(abs)
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	return filepath.Join(dir, base), nil
}

// logLevels are the levels --log-level takes (logrus's panic and fatal
// are left out: the daemon logs nothing at them, and either would hide
// every error).
var logLevels = []string{"trace", "debug", "info", "warn", "error"}

// optionKeys are the keys -o, --mode/--dirmode/--grp and the brackets of a
// multi:// URL take (setKey's cases); the netnode keys are accepted with
// no effect. The drift test holds --help and the man page to this list.
var optionKeys = []string{"mode", "dirmode", "grp", "dedup", "hashsize", "hashseed", "expiretime"}

// daemonFlags is the daemon's flag set, writing into o as flags are met.
func daemonFlags(o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("multifs", pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are ours to print, in one line
	fs.Usage = func() {}
	fs.SortFlags = false
	fs.BoolVarP(&o.foreground, "foreground", "f", false, "stay in the foreground")
	// -o has no long name of its own: pflag's --o is its double.
	fs.VarP(setter(func(v string) error { return o.setKeys(v, ",", "-o") }), "o", "o", "KEY=VALUE[,...]")
	fs.Var(setter(func(v string) error { return o.setKey("mode", v, "--mode") }), "mode", "socket and file permissions")
	fs.Var(setter(func(v string) error { return o.setKey("dirmode", v, "--dirmode") }), "dirmode", "directory permissions")
	fs.Var(setter(func(v string) error { return o.setKey("grp", v, "--grp") }), "grp", "group")
	fs.StringVar(&o.sockdir, "sockdir", "", "where the real sockets go")
	fs.Var(setter(func(v string) error {
		name, ok := strings.CutPrefix(v, "tap://")
		if !ok || name == "" {
			return usageErr("--host %q: want tap://NAME", v)
		}
		o.tap = name
		return nil
	}), "host", "tap://NAME")
	fs.StringVar(&o.logLevel, "log-level", o.logLevel, "log level")
	fs.StringVar(&o.logFormat, "log-format", o.logFormat, "text or json")
	fs.StringVar(&o.logFile, "log-file", "", "log file")
	fs.BoolVar(&o.version, "version", false, "print the version")
	fs.BoolVarP(&o.help, "help", "h", false, "print the help")
	return fs
}

// setter is a flag whose every occurrence is applied at once by a
// function of ours.
type setter func(string) error

func (s setter) Set(v string) error { return s(v) }
func (setter) String() string       { return "" }
func (setter) Type() string         { return "value" }
