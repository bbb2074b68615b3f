# shellcheck shell=bash
# Shared by setup.sh and demo.sh (sourced, not run).

# gvt_cache_dir: where setup.sh caches downloads and unpacked trees. Keep in
# step with cacheDir in qemu_test.go.
gvt_cache_dir() {
	if [ -n "${GOVIRTIOFS_CACHE:-}" ]; then
		echo "$GOVIRTIOFS_CACHE"
	elif [ -n "${XDG_CACHE_HOME:-}" ]; then
		echo "$XDG_CACHE_HOME/govirtiofs"
	elif [ "$(id -u)" = 0 ]; then
		echo /var/cache/govirtiofs
	else
		echo "${HOME:-/tmp}/.cache/govirtiofs"
	fi
}
