# govirtiofs build and test entry points. `make test` is what CI runs; it
# installs what it needs itself on a fresh Debian machine.

GO       ?= go
BIN      := bin
PKGS     := ./...

.PHONY: all build demo test deps lint fuzz-smoke bench install clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/govirtiofsd ./cmd/govirtiofsd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/govirtiofs-guest ./cmd/govirtiofs-guest

## demo: boot a small VM that mounts a share served by govirtiofsd and show it working.
demo: build
	@scripts/deps.sh
	@qemu-tests/setup.sh
	@qemu-tests/demo.sh

## deps: install the build and test prerequisites (idempotent): toolchain
## pieces, QEMU 7.2 and 10.0, guest kernels 6.1 and 6.12, initramfs.
deps:
	@scripts/deps.sh
	@qemu-tests/setup.sh

## lint: gofmt, go vet and staticcheck must be clean.
lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$$($(GO) env GOPATH)/bin/staticcheck $(PKGS)

## test: lint, then every test as root: unit, fuzz seed corpora, /dev/fuse
## integration, the fake vhost-user front-end, and QEMU guests (qemu-tests).
test: lint build
	@scripts/gotest.sh $(PKGS)

## fuzz-smoke: run each fuzz target for a short while.
fuzz-smoke:
	@for t in fuseproto:FuzzHandle fuseproto:FuzzCheckName fuseproto:FuzzSecCtx virtqueue:FuzzPop vhostuser:FuzzDecoders \
		fuseproto/stream:FuzzServe fuseproto/stream:FuzzReadHello \
		vhostuser:FuzzSession fuseproto/virtiofs:FuzzChainRequest overlay:FuzzParseFH \
		uidmap:FuzzParse uidmap:FuzzParseNSRange uidmap:FuzzTranslateACL \
		xattrmap:FuzzParse xattrmap:FuzzListToGuest fuseproto:FuzzXattrMapHandle; do \
		$(GO) test -run XXX -fuzz "^$${t#*:}$$" -fuzztime 30s "./$${t%%:*}" || exit 1; done

## bench: govirtiofsd against the Rust and C virtiofsd (scripts/bench.sh):
## Go microbenchmarks, the vufs-load host-side load generator, the host
## /dev/fuse benchmark against go-fuse's loopback, and the QEMU guest
## benchmark. Tables go to bin/bench-*.md. BENCH_PARTS=micro,load,host,guest
## and BENCH_ROUNDS=N select; the guest part takes the longest (about an
## hour for 3 rounds).
bench: build
	@scripts/deps.sh
	@qemu-tests/setup.sh
	@qemu-tests/setup-virtiofsd-rust.sh
	@scripts/bench.sh

## install: the daemon into $(PREFIX)/libexec, its vhost-user descriptor for
## libvirt into /usr/share/qemu/vhost-user, and the helper mount(8) runs
## for "mount -t fuse.govirtiofs" (and fstab lines of that type): a link
## mount.fuse.govirtiofs in /sbin, where util-linux looks for helpers
## whatever the prefix (/sbin:/sbin/fs.d:/sbin/fs; on merged-/usr systems
## /sbin is /usr/sbin). DESTDIR stages the whole tree.
PREFIX         ?= /usr
LIBEXECDIR     ?= $(PREFIX)/libexec
MOUNTHELPERDIR ?= /sbin
# VHOSTUSERDIR holds the vhost-user backend descriptor libvirt reads to find
# a virtio-fs daemon (QEMU's docs/interop/vhost-user.json); 40- sorts before
# virtiofsd's 50-, so libvirt prefers govirtiofsd when both are installed.
VHOSTUSERDIR   ?= /usr/share/qemu/vhost-user

install: build
	install -D -m 0755 $(BIN)/govirtiofsd $(DESTDIR)$(LIBEXECDIR)/govirtiofsd
	install -d $(DESTDIR)$(MOUNTHELPERDIR)
	ln -sfn $(LIBEXECDIR)/govirtiofsd $(DESTDIR)$(MOUNTHELPERDIR)/mount.fuse.govirtiofs
	install -d $(DESTDIR)$(VHOSTUSERDIR)
	sed 's|@LIBEXECDIR@|$(LIBEXECDIR)|' packaging/govirtiofsd.json.in > $(DESTDIR)$(VHOSTUSERDIR)/40-govirtiofsd.json
	chmod 0644 $(DESTDIR)$(VHOSTUSERDIR)/40-govirtiofsd.json

clean:
	rm -rf $(BIN)
