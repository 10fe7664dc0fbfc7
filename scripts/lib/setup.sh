# Sourced by scripts/test and scripts/demo: installs the system packages and Rust components
# cowd's tests and demo need on a fresh Debian machine. Set SKIP_INSTALL=1 to skip.

install_packages() {
    [ "${SKIP_INSTALL:-0}" = 1 ] && return 0
    local want=(libnbd-bin python3-libnbd nbdfuse nbdkit fio e2fsprogs fuse3 curl util-linux fdisk ntfs-3g libiscsi-bin tgt)
    # qemu-utils: keep whatever version the machine has (Debian backports may be newer).
    { command -v qemu-img && command -v qemu-io; } >/dev/null || want+=(qemu-utils)
    local missing=() p
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "==> installing: ${missing[*]}"
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; return 1; }
    if command -v rustup >/dev/null; then
        rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
    fi
}
