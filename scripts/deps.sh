#!/usr/bin/env bash
# Installs what building and testing govirtiofs needs on a Debian machine:
# Go is expected on PATH (/usr/local/go on our machines); the C toolchain and
# kernel UAPI headers (for the ABI check) and staticcheck are installed here.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH 2>/dev/null)/bin"

need_apt=()
command -v gcc >/dev/null || need_apt+=(gcc)
[ -f /usr/include/linux/fuse.h ] || need_apt+=(linux-libc-dev)
command -v newuidmap >/dev/null || need_apt+=(uidmap)
if [ ${#need_apt[@]} -gt 0 ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

ver=v0.8.2
sc="$(go env GOPATH)/bin/staticcheck"
if ! { [ -x "$sc" ] && "$sc" -version 2>/dev/null | grep -q "${ver#v}"; }; then
	go install "honnef.co/go/tools/cmd/staticcheck@$ver"
fi

# An unprivileged user with subordinate ids, for the tests of --uid-map
# through newuidmap/newgidmap (cmd/govirtiofsd TestSandboxNewuidmap).
if [ "$(id -u)" = 0 ] && ! id govirtiofs-test >/dev/null 2>&1; then
	useradd --system --no-create-home --shell /usr/sbin/nologin govirtiofs-test
fi
if [ "$(id -u)" = 0 ] && ! grep -q '^govirtiofs-test:' /etc/subuid; then
	usermod --add-subuids 300000-365535 --add-subgids 300000-365535 govirtiofs-test
fi
