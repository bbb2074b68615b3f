#!/usr/bin/env bash
# Installs and fetches what the QEMU end-to-end tests and the demo need, on a
# Debian 12 (bookworm) machine, as root:
#
#   - Debian's qemu-system-x86 (QEMU 7.2), installed with apt;
#   - QEMU 10.0 from bookworm-backports, unpacked into a private folder with a
#     private apt state (the machine's apt configuration is not touched), so it
#     runs beside 7.2 with its own firmware directory (-L);
#   - guest kernels: Debian 12's 6.1 (virtio and virtiofs as modules) and the
#     6.12 image from bookworm-backports (built in), each also as an
#     uncompressed ELF vmlinux when the bzImage's xz payload can be extracted
#     (boots faster through the PVH entry point);
#   - busybox-static, and per kernel a base initramfs (busybox + the modules the
#     guest needs). The tests append their own /init and guest programs.
#
# Everything is cached outside the repository, in $GOVIRTIOFS_CACHE (default
# $XDG_CACHE_HOME/govirtiofs if XDG_CACHE_HOME is set, else
# /var/cache/govirtiofs as root, else ~/.cache/govirtiofs). Each step leaves a
# stamp and is skipped when its stamp is there, so a warm run needs no network;
# remove the cache folder (or one step's stamp under stamps/) to refetch.
#
# The result is described in $CACHE/setup.env (KEY=VALUE lines) which the Go
# test (qemu-tests/qemu_test.go) and demo.sh read.
#
# Environment:
#   GOVIRTIOFS_CACHE           cache folder (see above)
#   GOVIRTIOFS_DEBIAN_MIRROR   Debian mirror URL; default: derived from the
#                              machine's apt sources (the one serving bookworm)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

CACHE="$(gvt_cache_dir)"
mkdir -p "$CACHE/stamps" "$CACHE/debs"
STAMPS="$CACHE/stamps"
DEBS="$CACHE/debs"
exec 9>"$CACHE/.lock"
flock 9

t_start=$(date +%s.%N)
log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
done_p() { [ -e "$STAMPS/$1" ]; }
mark() { printf '%s\n' "${2:-ok}" >"$STAMPS/$1"; }

codename=bookworm
if [ -r /etc/os-release ]; then
	# shellcheck disable=SC1091
	. /etc/os-release
	[ "${VERSION_CODENAME:-}" = bookworm ] || log "warning: this is ${PRETTY_NAME:-an unknown system}, not Debian 12; carrying on with bookworm packages"
fi

# --- The Debian mirror, as the machine's apt sources name it. ---
mirror_from_sources() {
	local f
	{
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[ -r "$f" ] || continue
			# one-line format: deb [opts] URI SUITE COMPONENT...
			sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
				awk -v s="$codename" '$1 == "deb" && $3 == s { print $2 }'
		done
		for f in /etc/apt/sources.list.d/*.sources; do
			[ -r "$f" ] || continue
			# deb822 format: paragraphs with URIs:, Suites:, Enabled:
			awk -v s="$codename" '
				function flush() {
					if (uris != "" && enabled != "no" && index(" " suites " ", " " s " ") > 0) {
						split(uris, u, " "); print u[1]
					}
					uris = ""; suites = ""; enabled = ""
				}
				/^[ \t]*#/ { next }
				/^[ \t]*$/ { flush(); next }
				tolower($1) == "uris:" { $1 = ""; uris = $0; sub(/^ +/, "", uris) }
				tolower($1) == "suites:" { $1 = ""; suites = $0; sub(/^ +/, "", suites) }
				tolower($1) == "enabled:" { enabled = tolower($2) }
				END { flush() }' "$f"
		done
	} | head -n1
}
MIRROR="${GOVIRTIOFS_DEBIAN_MIRROR:-$(mirror_from_sources)}"
MIRROR="${MIRROR%/}"
[ -n "$MIRROR" ] || die "no apt source for $codename found in /etc/apt/sources.list*; set GOVIRTIOFS_DEBIAN_MIRROR"

# --- apt with the machine's sources (bookworm) ---
apt_updated=
apt_update_once() {
	[ -z "$apt_updated" ] || return 0
	log "apt-get update"
	# Other sources on the machine may be unreachable; the Debian ones are what
	# we need, and a failure there shows up as a failed install below.
	apt-get update -qq >&2 || log "warning: apt-get update reported errors (continuing)"
	apt_updated=1
}
apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	[ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]}"
	log "apt-get install ${missing[*]}"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
		apt_update_once
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
			die "apt-get install ${missing[*]} failed"
	fi
}
# apt_download_main PKG...: download .debs from the machine's sources into $DEBS.
apt_download_main() {
	(cd "$DEBS" && apt-get -o APT::Sandbox::User=root download -qq "$@" >&2) && return 0
	apt_update_once
	(cd "$DEBS" && apt-get -o APT::Sandbox::User=root download -qq "$@" >&2) || die "apt-get download $* failed"
}

# --- private apt state naming bookworm-backports only ---
BPO="$CACHE/apt-backports"
bpo_opts=(
	-o "Dir::Etc::SourceList=$BPO/sources.list"
	-o "Dir::Etc::SourceParts=-"
	-o "Dir::State::Lists=$BPO/lists"
	-o "Dir::Cache=$BPO/cache"
	-o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
	-o "APT::Get::List-Cleanup=0"
)
bpo_ready=
bpo_update() {
	[ -z "$bpo_ready" ] || return 0
	mkdir -p "$BPO/lists/partial" "$BPO/cache/archives/partial"
	local signed=
	[ -r /usr/share/keyrings/debian-archive-keyring.gpg ] && signed="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
	printf 'deb %s%s %s-backports main\n' "$signed" "$MIRROR" "$codename" >"$BPO/sources.list"
	log "private apt update: $MIRROR $codename-backports"
	apt-get "${bpo_opts[@]}" update -qq >&2 || die "apt-get update of $codename-backports failed"
	bpo_ready=1
}
bpo_cache() { apt-cache "${bpo_opts[@]}" "$@"; }
bpo_download() { (cd "$DEBS" && apt-get "${bpo_opts[@]}" -o APT::Sandbox::User=root download -qq "$@" >&2) || die "apt-get download $* ($codename-backports) failed"; }

# candidate PKG [apt-cache options...]: the version apt would pick, or "".
candidate() {
	local pkg="$1" v
	shift
	v="$(apt-cache "$@" policy "$pkg" | awk '/Candidate:/ { print $2 }')"
	if [ "$v" != "(none)" ]; then echo "$v"; fi
}
# main_candidate PKG: candidate from the machine's sources, updating the
# package lists once if they do not know PKG.
main_candidate() {
	local v
	v="$(candidate "$1")"
	if [ -z "$v" ]; then
		apt_update_once
		v="$(candidate "$1")"
	fi
	echo "$v"
}

# deb_path NAME VERSION: the .deb apt-get download left in $DEBS, if any.
deb_path() {
	local v="${2//:/%3a}" f
	for f in "$DEBS/$1_${v}_amd64.deb" "$DEBS/$1_${v}_all.deb"; do
		[ -e "$f" ] && { echo "$f"; return 0; }
	done
	return 1
}

# ============================================================================
# 1. QEMU 7.2 from Debian 12 (and its C virtiofsd, the reference daemon).
if ! done_p qemu72 || ! [ -x /usr/bin/qemu-system-x86_64 ]; then
	apt_install qemu-system-x86
	/usr/bin/qemu-system-x86_64 --version | head -n1 >&2
	mark qemu72
fi
QEMU72=/usr/bin/qemu-system-x86_64

# ============================================================================
# 2. QEMU 10.0 from bookworm-backports, unpacked privately. Its firmware
#    comes from its own data folder and the backported SeaBIOS (both passed
#    with -L), its loadable modules from QEMU_MODULE_DIR; the iPXE option ROMs
#    from the machine's ipxe-qemu, which QEMU 7.2 pulled in.
#    qemu-system-modules-opengl and -spice are there only because QEMU loads
#    ui-opengl and ui-spice-core at start-up and would otherwise find 7.2's
#    copies (its module search ends in the system folder) and complain.
Q10="$CACHE/qemu10"
q10pkgs=(qemu-system-x86 qemu-system-common qemu-system-data qemu-system-modules-opengl qemu-system-modules-spice)
if ! done_p qemu10 || ! [ -x "$Q10/root/usr/bin/qemu-system-x86_64" ]; then
	bpo_update
	ver="$(candidate qemu-system-x86 "${bpo_opts[@]}")"
	case "$ver" in
	1:10.0*) ;;
	*) die "$codename-backports offers qemu-system-x86 '$ver', not 1:10.0" ;;
	esac
	sbver="$(candidate seabios "${bpo_opts[@]}")"
	[ -n "$sbver" ] || die "no seabios in $codename-backports"
	for p in "${q10pkgs[@]}"; do
		deb_path "$p" "$ver" >/dev/null || bpo_download "$p=$ver"
	done
	deb_path seabios "$sbver" >/dev/null || bpo_download "seabios=$sbver"
	rm -rf "$Q10.tmp"
	mkdir -p "$Q10.tmp/root"
	for p in "${q10pkgs[@]}"; do
		dpkg-deb -x "$(deb_path "$p" "$ver")" "$Q10.tmp/root"
	done
	dpkg-deb -x "$(deb_path seabios "$sbver")" "$Q10.tmp/root"
	apt_install ipxe-qemu
	# Libraries the binaries lack: install them from bookworm (the backport
	# is built against bookworm, so its Depends are bookworm packages).
	q10bins=("$Q10.tmp/root/usr/bin/qemu-system-x86_64" "$Q10.tmp/root/usr/lib/x86_64-linux-gnu/qemu/ui-opengl.so" "$Q10.tmp/root/usr/lib/x86_64-linux-gnu/qemu/ui-spice-core.so")
	lacking="$(ldd "${q10bins[@]}" | awk '/not found/ { print $1 }' | sort -u)"
	if [ -n "$lacking" ]; then
		log "QEMU 10 lacks: $(echo "$lacking" | tr '\n' ' ')"
		libpkgs="$(for p in qemu-system-x86 qemu-system-common qemu-system-modules-opengl qemu-system-modules-spice; do
			dpkg-deb -f "$(deb_path "$p" "$ver")" Depends; done |
			tr ',' '\n' | sed -e 's/([^)]*)//g' -e 's/|.*//' -e 's/ //g' | grep -E '^(lib|zlib)' | sort -u)"
		# shellcheck disable=SC2086
		apt_install $libpkgs
		lacking="$(ldd "${q10bins[@]}" | awk '/not found/ { print $1 }' | sort -u)"
		[ -z "$lacking" ] || die "QEMU 10 still lacks: $lacking"
	fi
	rm -rf "$Q10"
	mv "$Q10.tmp" "$Q10"
	mark qemu10 "$ver"
fi
QEMU10="$Q10/root/usr/bin/qemu-system-x86_64"
QEMU10_DATA="$Q10/root/usr/share/qemu"
QEMU10_BIOS="$Q10/root/usr/share/seabios"
QEMU10_MODULES="$Q10/root/usr/lib/x86_64-linux-gnu/qemu"
QEMU_MODULE_DIR="$QEMU10_MODULES" "$QEMU10" -L "$QEMU10_DATA" -L "$QEMU10_BIOS" --version >/dev/null ||
	die "$QEMU10 does not run; remove $Q10 and $STAMPS/qemu10 and rerun"

# ============================================================================
# 3. busybox-static from Debian 12.
BB="$CACHE/busybox/busybox"
if ! done_p busybox || ! [ -x "$BB" ]; then
	ver="$(main_candidate busybox-static)"
	[ -n "$ver" ] || die "no busybox-static in $codename"
	deb_path busybox-static "$ver" >/dev/null || apt_download_main "busybox-static=$ver"
	rm -rf "$CACHE/busybox.tmp"
	mkdir -p "$CACHE/busybox.tmp/x"
	dpkg-deb -x "$(deb_path busybox-static "$ver")" "$CACHE/busybox.tmp/x"
	mv "$CACHE/busybox.tmp/x/bin/busybox" "$CACHE/busybox.tmp/busybox"
	rm -rf "$CACHE/busybox.tmp/x" "$CACHE/busybox"
	mv "$CACHE/busybox.tmp" "$CACHE/busybox"
	mark busybox "$ver"
fi

# ============================================================================
# 4. Guest kernels.

# vmlinux_from_bzimage BZIMAGE OUT: the bzImage's compressed payload (xz for
# Debian's 6.1, zstd for 6.12), uncompressed, is an ELF vmlinux with a PVH
# entry note; QEMU boots that without the real-mode setup and the guest-side
# decompression, which under TCG saves seconds. The decompressors complain
# about the bytes after the payload; the result is checked instead.
vmlinux_from_bzimage() {
	local magic dec off
	for magic in xz zstd; do
		case $magic in
		xz) off="$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$1" | head -n1 | cut -d: -f1)"; dec=(xz -dc --single-stream) ;;
		zstd) off="$(LC_ALL=C grep -obUaP '\x28\xb5\x2f\xfd' "$1" | head -n1 | cut -d: -f1)"; dec=(zstd -qdc) ;;
		esac
		[ -n "$off" ] || continue
		{ tail -c +"$((off + 1))" "$1" | "${dec[@]}" >"$2.tmp"; } 2>/dev/null || true
		if elf_complete "$2.tmp"; then
			mv "$2.tmp" "$2"
			return 0
		fi
	done
	rm -f "$2.tmp"
	return 1
}

# elf_complete FILE: FILE is a 64-bit little-endian ELF whose section header
# table (the last thing the linker writes) lies inside the file.
elf_complete() {
	[ -s "$1" ] || return 1
	[ "$(od -An -tx1 -N5 "$1" | tr -d ' \n')" = 7f454c4602 ] || return 1
	local shoff shentsize shnum size
	shoff=$(od -An -tu8 -j40 -N8 "$1" | tr -d ' ')
	shentsize=$(od -An -tu2 -j58 -N2 "$1" | tr -d ' ')
	shnum=$(od -An -tu2 -j60 -N2 "$1" | tr -d ' ')
	size=$(stat -c %s "$1")
	[ $((shoff + shentsize * shnum)) -le "$size" ]
}

# fetch_kernel NAME PKG DEB-SOURCE(main|backports) MODULES...
#   Unpacks PKG, keeps /boot/vmlinuz-*, an ELF vmlinux if extractable, and the
#   listed modules (in load order) under $CACHE/kernel-NAME.
fetch_kernel() {
	local name="$1" pkg="$2" src="$3" ver dir deb kver m f
	shift 3
	dir="$CACHE/kernel-$name"
	if done_p "kernel-$name" && [ -e "$dir/vmlinuz" ]; then return 0; fi
	if [ "$src" = backports ]; then
		bpo_update
		ver="$(candidate "$pkg" "${bpo_opts[@]}")"
		[ -n "$ver" ] || die "no $pkg in $codename-backports"
		deb_path "$pkg" "$ver" >/dev/null || bpo_download "$pkg=$ver"
	else
		ver="$(main_candidate "$pkg")"
		[ -n "$ver" ] || die "no $pkg in $codename"
		deb_path "$pkg" "$ver" >/dev/null || apt_download_main "$pkg=$ver"
	fi
	deb="$(deb_path "$pkg" "$ver")"
	log "unpacking $(basename "$deb")"
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp/x" "$dir.tmp/modules"
	dpkg-deb -x "$deb" "$dir.tmp/x"
	kver="$(basename "$(echo "$dir.tmp"/x/lib/modules/*)")"
	cp "$dir.tmp/x/boot/vmlinuz-$kver" "$dir.tmp/vmlinuz"
	cp "$dir.tmp/x/boot/config-$kver" "$dir.tmp/config"
	: >"$dir.tmp/modules/order"
	for m in "$@"; do
		f="$(find "$dir.tmp/x/lib/modules/$kver/kernel" -name "$m.ko*" | head -n1)"
		[ -n "$f" ] || die "kernel $kver: module $m not found"
		case "$f" in
		*.ko) cp "$f" "$dir.tmp/modules/$m.ko" ;;
		*.ko.xz) xz -dc "$f" >"$dir.tmp/modules/$m.ko" ;;
		*.ko.zst) zstd -qdc "$f" >"$dir.tmp/modules/$m.ko" ;;
		*) die "unknown module format $f" ;;
		esac
		echo "$m" >>"$dir.tmp/modules/order"
	done
	rm -rf "$dir.tmp/x"
	if vmlinux_from_bzimage "$dir.tmp/vmlinuz" "$dir.tmp/vmlinux"; then
		log "kernel $kver: extracted ELF vmlinux ($(du -m "$dir.tmp/vmlinux" | cut -f1) MiB)"
	else
		log "kernel $kver: no ELF vmlinux could be extracted; the bzImage will be booted"
	fi
	echo "$kver" >"$dir.tmp/release"
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
	mark "kernel-$name" "$kver"
}

k61pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-6\.1\./ { print $2; exit }')"
if ! done_p kernel-6.1; then
	[ -n "$k61pkg" ] || { apt_update_once; k61pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-6\.1\./ { print $2; exit }')"; }
	[ -n "$k61pkg" ] || die "cannot find Debian 12's linux-image-6.1.0-*-amd64"
fi
fetch_kernel 6.1 "$k61pkg" main \
	virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci fuse virtiofs

if ! done_p kernel-6.12; then
	bpo_update
	k612pkg="$(bpo_cache depends linux-image-amd64 | awk '/Depends: linux-image-6\.12\./ { print $2; exit }')"
	[ -n "$k612pkg" ] || die "cannot find a linux-image-6.12 in $codename-backports"
fi
fetch_kernel 6.12 "${k612pkg:-}" backports

# ============================================================================
# 5. Base initramfs per kernel: busybox and modules. The tests and the demo
#    append a second archive with /init and what the guest runs.
build_base_initrd() {
	local name="$1" kdir="$CACHE/kernel-$1" out="$CACHE/initrd-$1.cpio" stage m
	local want
	want="layout2 $(cat "$STAMPS/busybox" "$STAMPS/kernel-$name" | tr '\n' ' ')"
	if [ -e "$out" ] && [ "$(cat "$STAMPS/initrd-$name" 2>/dev/null)" = "$want" ]; then return 0; fi
	stage="$(mktemp -d)"
	mkdir -p "$stage"/{bin,dev,proc,sys,mnt,tmp,lib/modules}
	cp "$BB" "$stage/bin/busybox"
	# The kernel gives /init the console only if /dev/console exists in the
	# rootfs; /init also remounts it from devtmpfs, so this is best effort.
	mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || true
	ln -s busybox "$stage/bin/sh"
	while read -r m; do
		[ -n "$m" ] || continue
		cp "$kdir/modules/$m.ko" "$stage/lib/modules/"
	done <"$kdir/modules/order"
	cp "$kdir/modules/order" "$stage/lib/modules/order"
	(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | "$BB" cpio -o -H newc 2>/dev/null) >"$out.tmp"
	rm -rf "$stage"
	mv "$out.tmp" "$out"
	mark "initrd-$name" "$want"
}
build_base_initrd 6.1
build_base_initrd 6.12

kernel_for() { # best kernel image for NAME: the ELF vmlinux if extracted
	if [ -e "$CACHE/kernel-$1/vmlinux" ]; then echo "$CACHE/kernel-$1/vmlinux"; else echo "$CACHE/kernel-$1/vmlinuz"; fi
}

# ============================================================================
# 6. The description the tests and the demo read.
cat >"$CACHE/setup.env.tmp" <<EOF
# written by qemu-tests/setup.sh; read by qemu-tests/qemu_test.go and demo.sh
CACHE=$CACHE
BUSYBOX=$BB
QEMU72=$QEMU72
QEMU72_VERSION=$($QEMU72 --version | head -n1 | awk '{ print $4 }')
QEMU10=$QEMU10
QEMU10_DATA=$QEMU10_DATA
QEMU10_BIOS=$QEMU10_BIOS
QEMU10_MODULES=$QEMU10_MODULES
QEMU10_VERSION=$(QEMU_MODULE_DIR="$QEMU10_MODULES" "$QEMU10" -L "$QEMU10_DATA" -L "$QEMU10_BIOS" --version | head -n1 | awk '{ print $4 }')
KERNEL61=$(kernel_for 6.1)
KERNEL61_BZIMAGE=$CACHE/kernel-6.1/vmlinuz
KERNEL61_RELEASE=$(cat "$CACHE/kernel-6.1/release")
INITRD61=$CACHE/initrd-6.1.cpio
KERNEL612=$(kernel_for 6.12)
KERNEL612_BZIMAGE=$CACHE/kernel-6.12/vmlinuz
KERNEL612_RELEASE=$(cat "$CACHE/kernel-6.12/release")
INITRD612=$CACHE/initrd-6.12.cpio
VIRTIOFSD_C=/usr/lib/qemu/virtiofsd
EOF
mv "$CACHE/setup.env.tmp" "$CACHE/setup.env"
log "ready in $(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s: $CACHE/setup.env"
