# multifs — the two commands a newcomer needs:
#   make run    installs fuse3 if missing, builds, starts multifs on the default path
#   make test   installs what the tests need, then runs every check and test
# Both expect a Debian machine with Go; installing packages needs root.

GO      ?= go
BIN     := bin
RUN_PKGS  := fuse3
# gcc and libc6-dev: the race detector (go test -race, the soak's daemon) needs cgo.
# systemd: systemd-analyze verify of the unit; man-db: man -l of the page.
# mmdebstrap systemd-container: t_systemd boots a Debian root with the installed units under systemd-nspawn.
# openssh-server openssh-client vde2: the real peers of t_peer_ssh and t_peer_vdeswitch.
# cmake make libexecs-dev: building the newest vdeplug4 (../shared/peers) for t_peer_vdeplug4.
# qemu-system-x86 busybox-static linux-image-cloud-amd64: the VM of t_peer_qemu (TCG).
# libvdeplug-dev: test/bench's TestCClientCounts builds the benchmark's real client.
# libvirt-clients libxml2-utils bsdextrautils: t_vhost_libvirt (virt-xml-validate runs xmllint; col).
TEST_PKGS := fuse3 vdeplug iproute2 iputils-ping psmisc procps util-linux passwd python3 gcc libc6-dev systemd man-db openssh-server openssh-client vde2 cmake make libexecs-dev qemu-system-x86 busybox-static linux-image-cloud-amd64 libvdeplug-dev mmdebstrap systemd-container socat libvirt-clients libxml2-utils bsdextrautils

.PHONY: all build run test deps-run deps-test check unit fuzz integration clean install uninstall

all: build

build:
	$(GO) build -o $(BIN)/multifs ./cmd/multifs
	$(GO) build -o $(BIN)/vdeprobe ./test/vdeprobe

# install-missing PKG...: apt-get install only what dpkg lacks.
define install-missing
	@need=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; done; \
	if [ -n "$$need" ]; then \
		echo "installing:$$need"; \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$need >/dev/null; \
	fi
endef

deps-run:
	$(call install-missing,$(RUN_PKGS))

deps-test:
	$(call install-missing,$(TEST_PKGS))

# RUN_PATH=/tmp/vm1 make run serves another path.
run: deps-run build
	$(BIN)/multifs $(RUN_PATH)
	@p="$(or $(RUN_PATH),/tmp/vdenode_$(shell id -un))"; \
	echo "multifs is serving $$p: join with 'vde_plug $$p', attach a host with 'vde_plug $$p/host ...', stop with 'fusermount -u $$p'"

check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@# control/client is for tests, the benchmark and vdeprobe: never in the daemon.
	@if $(GO) list -deps ./cmd/multifs | grep -q '^multifs/control/client$$'; then \
		echo "cmd/multifs imports multifs/control/client (test-only)"; exit 1; fi
	@# control/engine sits below the multilink: of multifs it knows the seam (multilink/conn) alone.
	@up=$$($(GO) list -deps ./control/engine | grep '^multifs/' | grep -vx -e multifs/control/engine -e multifs/multilink/conn); \
	if [ -n "$$up" ]; then echo "control/engine imports $$up (it may know multifs/multilink/conn alone)"; exit 1; fi
	@# gonum draws the bench's picture: test/bench alone imports it, never the daemon.
	@if $(GO) list -deps ./cmd/multifs | grep -q '^gonum\.org/'; then \
		echo "cmd/multifs depends on gonum.org (the bench's plotting library)"; exit 1; fi

unit:
	$(GO) test -race -count=1 ./...

# Each fuzz target from its seed corpus (control/wire/testdata/fuzz,
# control/testdata/fuzz; the vhost-user ones from their f.Add seeds), for a number of inputs (about 30 s each here),
# not a duration: go1.26's fuzz coordinator can fail a duration-bounded run
# with a bare "context deadline exceeded" as the time runs out
# (golang/go#75804), which it did in CI while it minimized a new input. MINIMIZETIME bounds each minimization (default
# 60 s, twice the whole run).
FUZZ_PARSE ?= 600000x
FUZZ_SEQPACKET ?= 10000x
FUZZ_STREAM ?= 150000x
FUZZ_VHOST_WALKER ?= 500000x
FUZZ_VHOST_REQUESTS ?= 20000x
MINIMIZETIME ?= 3s
fuzz:
	$(GO) test ./control/wire -run '^$$' -fuzz '^FuzzParseRequest$$' -fuzztime $(FUZZ_PARSE) -fuzzminimizetime $(MINIMIZETIME)
	$(GO) test ./control -run '^$$' -fuzz '^FuzzSeqpacketEntry$$' -fuzztime $(FUZZ_SEQPACKET) -fuzzminimizetime $(MINIMIZETIME)
	$(GO) test ./control/engine -run '^$$' -fuzz '^FuzzStreamParser$$' -fuzztime $(FUZZ_STREAM) -fuzzminimizetime $(MINIMIZETIME)
	$(GO) test ./control/vhostuser/virtq -run '^$$' -fuzz '^FuzzWalker$$' -fuzztime $(FUZZ_VHOST_WALKER) -fuzzminimizetime $(MINIMIZETIME)
	$(GO) test ./control/vhostuser -run '^$$' -fuzz '^FuzzRequests$$' -fuzztime $(FUZZ_VHOST_REQUESTS) -fuzzminimizetime $(MINIMIZETIME)

integration: build
	bash test/run.sh

test: deps-test check unit fuzz integration

clean:
	rm -rf $(BIN)

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary, the man page and
# the systemd template unit (in $(PREFIX)/lib/systemd/system, which systemd
# searches for /usr/local too); make uninstall removes exactly those.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
UNIT    := multifs@.service

install:
	$(GO) build -o $(BIN)/multifs ./cmd/multifs
	install -D -m 0755 $(BIN)/multifs $(DESTDIR)$(BINDIR)/multifs
	install -D -m 0644 docs/multifs.1 $(DESTDIR)$(MANDIR)/man1/multifs.1
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|@BINDIR@|$(BINDIR)|g' contrib/systemd/$(UNIT).in >$(DESTDIR)$(UNITDIR)/$(UNIT)
	chmod 0644 $(DESTDIR)$(UNITDIR)/$(UNIT)

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/multifs $(DESTDIR)$(MANDIR)/man1/multifs.1 $(DESTDIR)$(UNITDIR)/$(UNIT)

# make bench: multifs against the reference (Debian's vde_plug multi://) and
# the ceiling (the clients joined directly), one table plus bench.json; the
# targets are decided on the median of -runs 5; the hand-off is also drawn
# into handoff.svg (docs/handoff.svg is one such). BENCH_FLAGS=-quick for a
# short run, BENCH_FLAGS='-only rtp,rate' for some scenarios; see test/bench.
# gcc and libvdeplug-dev build the real client (test/bench/cclient); iperf3
# is for the tap-to-tap TCP rows; dpdk-dev has dpdk-testpmd, the vhost-user
# host and ceiling of the vhost rows (coreutils' stdbuf drives it).
.PHONY: bench
bench:
	$(call install-missing,fuse3 vdeplug iproute2 iputils-ping iperf3 gcc libc6-dev libvdeplug-dev dpdk-dev coreutils)
	$(GO) run ./test/bench $(BENCH_FLAGS)
