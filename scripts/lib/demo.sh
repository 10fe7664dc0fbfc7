# Sourced by scripts/demo: small helpers to run cowd and attach an export as a block device
# through nbdfuse + loop (the kernel nbd module is not available everywhere).

say()  { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die()  { printf 'demo: %s\n' "$*" >&2; exit 1; }

# wait_for CMD... : retries a command for up to 20 s.
wait_for() {
    local i
    for i in $(seq 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    die "timed out waiting for: $*"
}

# attach_export URI DIR : mounts the export with nbdfuse at DIR and prints a loop device on it.
attach_export() {
    local uri=$1 dir=$2
    mkdir -p "$dir"
    # Not attached to our stdout: this runs inside $(...), which would wait for it.
    nbdfuse "$dir" "$uri" </dev/null >"$dir.log" 2>&1 &
    wait_for test -e "$dir/nbd"
    losetup -f --show "$dir/nbd"
}

# detach_export LOOP DIR : undoes attach_export.
detach_export() {
    local loop=$1 dir=$2
    [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null || true
    [ -n "$dir" ] && fusermount3 -u "$dir" 2>/dev/null || true
}
