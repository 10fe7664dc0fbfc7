# Sourced by scripts/test and scripts/demo: installs the system packages and Rust components
# cowd's tests and demo need on a fresh Debian machine. Set SKIP_INSTALL=1 to skip.

install_packages() {
    [ "${SKIP_INSTALL:-0}" = 1 ] && return 0
    local want=(libnbd-bin python3-libnbd nbdfuse nbdkit fio e2fsprogs fuse3 curl util-linux fdisk ntfs-3g libiscsi-bin tgt)
    # etcd (the job table shared with `cowd mover`; the tests start their own on free ports;
    # etcdctl to look at it) and ip (network namespaces: the movers' hosts).
    want+=(etcd-server etcd-client iproute2)
    # Ceph's RADOS Gateway on a one-node cluster (a monitor, one OSD in memory): the real S3
    # server that the object-storage repository tests start (tests/src/rgw.rs).
    want+=(radosgw ceph-mon ceph-osd)
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
    install_qemu_iscsi || return 1
    command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; return 1; }
    if command -v rustup >/dev/null; then
        rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
    fi
}

# qemu-img's and qemu-io's iSCSI driver (the iSCSI tests, scripts/bench/iscsi) is a module in
# qemu-block-extra, which loads only when its version is exactly qemu-utils': a qemu-utils from
# bookworm-backports needs the module from there too. A private sources list and lists
# directory are used; the system's stay as they are.
install_qemu_iscsi() {
    [ "${SKIP_INSTALL:-0}" = 1 ] && return 0
    local qv
    qv=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null) || return 0
    dpkg-query -W -f='${Status} ${Version}' qemu-block-extra 2>/dev/null |
        grep -qxF "install ok installed $qv" && return 0
    local sudo="" d uri codename rc
    [ "$(id -u)" = 0 ] || sudo="sudo"
    d=$(mktemp -d)
    mkdir -p "$d/parts" "$d/lists/partial" "$d/archives/partial"
    cp /etc/apt/sources.list.d/debian.sources "$d/parts/"
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$uri" "$codename" >"$d/parts/backports.sources"
    local o=(-o "Dir::Etc::sourcelist=/dev/null" -o "Dir::Etc::sourceparts=$d/parts"
        -o "Dir::State::lists=$d/lists" -o "Dir::Cache::archives=$d/archives" -o APT::Sandbox::User=root)
    echo "==> installing: qemu-block-extra=$qv (qemu's iSCSI driver)"
    $sudo apt-get "${o[@]}" update -qq &&
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get "${o[@]}" install -y -qq --no-install-recommends "qemu-block-extra=$qv"
    rc=$?
    $sudo rm -rf "$d"
    return $rc
}
