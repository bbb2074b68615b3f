#!/usr/bin/env bash
# Fetches the reference Rust virtiofsd (Debian trixie's package, 1.13) for
# QEMUTEST_DAEMON=virtiofsd-rust, as /work/shared/TESTING.md describes:
# bookworm's libc is too old for it, so the package and the libraries it
# needs (libc6 libseccomp2 libcap-ng0 libgcc-s1) come from trixie through a
# private apt state (the machine's apt configuration is untouched) and are
# unpacked into one folder,
#
#   $CACHE/virtiofsd-rust/root
#
# where the tests run it through trixie's dynamic loader:
#
#   ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \
#       --library-path ROOT/usr/lib/x86_64-linux-gnu ROOT/usr/libexec/virtiofsd ...
#
# $CACHE is setup.sh's cache folder (lib.sh). The mirror is the one setup.sh
# used for bookworm-backports, else GOVIRTIOFS_DEBIAN_MIRROR, else
# deb.debian.org. A second run with the folder in place does nothing; remove
# $CACHE/virtiofsd-rust to refetch.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

CACHE="$(gvt_cache_dir)"
DIR="$CACHE/virtiofsd-rust"
ROOT="$DIR/root"
log() { printf 'setup-virtiofsd-rust: %s\n' "$*" >&2; }
die() { printf 'setup-virtiofsd-rust: error: %s\n' "$*" >&2; exit 1; }

ldso="$ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
bin="$ROOT/usr/libexec/virtiofsd"
if [ -x "$bin" ] && [ -e "$ldso" ]; then
	"$ldso" --library-path "$ROOT/usr/lib/x86_64-linux-gnu" "$bin" --version
	exit 0
fi

mirror="${GOVIRTIOFS_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ] && [ -r "$CACHE/apt-backports/sources.list" ]; then
	mirror="$(sed -e 's/\[[^]]*\]//' "$CACHE/apt-backports/sources.list" | awk '$1 == "deb" { print $2; exit }')"
fi
mirror="${mirror:-http://deb.debian.org/debian}"
mirror="${mirror%/}"

APT="$DIR/apt"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$DIR/debs"
signed=
[ -r /usr/share/keyrings/debian-archive-keyring.gpg ] && signed="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
printf 'deb %s%s trixie main\n' "$signed" "$mirror" >"$APT/sources.list"
opts=(
	-o "Dir::Etc::SourceList=$APT/sources.list"
	-o "Dir::Etc::SourceParts=-"
	-o "Dir::State::Lists=$APT/lists"
	-o "Dir::Cache=$APT/cache"
	-o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
	-o "APT::Get::List-Cleanup=0"
)
log "private apt update: $mirror trixie"
apt-get "${opts[@]}" update -qq >&2 || die "apt-get update of trixie failed"
(cd "$DIR/debs" && apt-get "${opts[@]}" -o APT::Sandbox::User=root download -qq \
	virtiofsd libc6 libseccomp2 libcap-ng0 libgcc-s1 >&2) || die "apt-get download failed"
rm -rf "$ROOT.tmp"
mkdir -p "$ROOT.tmp"
for deb in "$DIR"/debs/*.deb; do
	dpkg-deb -x "$deb" "$ROOT.tmp"
done
rm -rf "$ROOT"
mv "$ROOT.tmp" "$ROOT"
"$ldso" --library-path "$ROOT/usr/lib/x86_64-linux-gnu" "$bin" --version
