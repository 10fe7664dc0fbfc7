# Sourced by scripts/vm/kernel-nbd: gets Debian's kernel, busybox-static and (unless the machine
# has one) qemu-system-x86 into a private cache, without installing or replacing any package.
#
# Why not `apt-get install qemu-system-x86`: Debian 12's emulator (7.2) conflicts with a newer
# qemu-utils from backports and apt would remove qemu-img/qemu-io/qemu-nbd, which other tests
# need. So the packages are downloaded (`apt-get download`) and unpacked (`dpkg -x`) under
# $VM_CACHE/root, and the emulator runs from there with LD_LIBRARY_PATH and -L.
#
# After vm_fetch: VM_ROOT (the unpacked packages), VM_KVER, VM_VMLINUZ, VM_BUSYBOX, VM_QEMU
# (command) and VM_QEMU_ARGS (its firmware directories), VM_QEMU_LIBS (for LD_LIBRARY_PATH).

vm_apt() { env DEBIAN_FRONTEND=noninteractive apt-get -q -o APT::Sandbox::User=root "$@"; }

# The kernel package linux-image-amd64 depends on (linux-image-6.1.0-N-amd64).
vm_kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}'
}

# NAME=VERSION of the candidate of each package named (none for a package apt cannot install).
vm_candidates() {
    apt-cache policy "$@" 2>/dev/null |
        awk '/^[^ ]/ {p = $1; sub(/:$/, "", p)} $1 == "Candidate:" && $2 != "(none)" {print p "=" $2}'
}

# Packages, as NAME=VERSION, that the emulator needs and this machine has not installed: the
# ones a simulated `apt-get install qemu-system-x86` would newly install (nothing is changed).
# A qemu-block-extra that matches a newer qemu-utils (setup.sh installs it for the iSCSI tests)
# breaks that simulation; it is removed in the simulation only, as the newer qemu-utils is.
vm_qemu_packages() {
    local extra=()
    dpkg-query -W -f='${Status}' qemu-block-extra 2>/dev/null | grep -q "install ok installed" &&
        extra=(qemu-block-extra-)
    vm_apt -s install --no-install-recommends qemu-system-x86 "${extra[@]}" |
        awk '$1 == "Inst" && $3 ~ /^\(/ {sub(/^\(/, "", $3); print $2 "=" $3}'
}

# Sets VM_WANT to NAME=VERSION of every package to unpack, VM_KPKG and VM_SYSTEM_QEMU (the
# machine's qemu-system-x86_64, when it has one: then the emulator is not fetched).
vm_resolve() {
    VM_KPKG=$(vm_kernel_package)
    VM_WANT=()
    [ -n "$VM_KPKG" ] || return 1
    mapfile -t VM_WANT < <(vm_candidates "$VM_KPKG" busybox-static)
    [ "${#VM_WANT[@]}" = 2 ] || return 1
    VM_SYSTEM_QEMU=$(command -v qemu-system-x86_64 || true)
    [ -z "$VM_SYSTEM_QEMU" ] || return 0
    local p
    while read -r p; do VM_WANT+=("$p"); done < <(vm_qemu_packages)
    printf '%s\n' "${VM_WANT[@]}" | grep -q '^qemu-system-x86='
}

# Downloads VM_WANT into $VM_CACHE/debs and unpacks it all into $VM_CACHE/root.new.
vm_download() {
    rm -rf "$VM_CACHE/debs" "$VM_CACHE/root.new"
    mkdir -p "$VM_CACHE/debs" "$VM_CACHE/root.new"
    (cd "$VM_CACHE/debs" && vm_apt download "${VM_WANT[@]}" >/dev/null) || return 1
    local d
    for d in "$VM_CACHE"/debs/*.deb; do dpkg -x "$d" "$VM_CACHE/root.new" || return 1; done
    rm -rf "$VM_CACHE/debs"
}

vm_fetch() {
    VM_CACHE=${VM_CACHE:-/var/cache/cowd-test/vm}
    mkdir -p "$VM_CACHE"
    if ! vm_resolve; then
        echo "vm: apt-get update (apt cannot resolve the kernel, busybox-static or qemu-system-x86)"
        vm_apt update -qq
        vm_resolve || { echo "vm: apt cannot resolve linux-image-amd64, busybox-static or qemu-system-x86" >&2; return 1; }
    fi
    # One stamp names every package version unpacked in $VM_CACHE/root: a second run with the
    # same versions downloads and unpacks nothing.
    local stamp
    stamp=$(printf '%s\n' "${VM_WANT[@]}" | sort)
    if [ "$(cat "$VM_CACHE/root.stamp" 2>/dev/null)" != "$stamp" ]; then
        echo "vm: downloading ${VM_WANT[*]}"
        if ! vm_download; then
            echo "vm: download failed; apt-get update and retry"
            vm_apt update -qq
            vm_resolve && vm_download || { echo "vm: cannot download ${VM_WANT[*]}" >&2; return 1; }
            stamp=$(printf '%s\n' "${VM_WANT[@]}" | sort)
        fi
        rm -rf "$VM_CACHE/root" "$VM_CACHE/root.stamp"
        mv "$VM_CACHE/root.new" "$VM_CACHE/root"
        printf '%s\n' "$stamp" >"$VM_CACHE/root.stamp"
    fi

    VM_ROOT=$VM_CACHE/root
    VM_KVER=${VM_KPKG#linux-image-}
    VM_VMLINUZ=$VM_ROOT/boot/vmlinuz-$VM_KVER
    VM_BUSYBOX=$VM_ROOT/bin/busybox
    [ -f "$VM_VMLINUZ" ] && [ -d "$VM_ROOT/lib/modules/$VM_KVER" ] && [ -x "$VM_BUSYBOX" ] || {
        echo "vm: $VM_ROOT lacks the kernel $VM_KVER or busybox" >&2
        return 1
    }
    if [ -n "$VM_SYSTEM_QEMU" ]; then
        VM_QEMU=$VM_SYSTEM_QEMU VM_QEMU_ARGS=() VM_QEMU_LIBS=""
    else
        VM_QEMU=$VM_ROOT/usr/bin/qemu-system-x86_64
        VM_QEMU_ARGS=(-L "$VM_ROOT/usr/share/qemu" -L "$VM_ROOT/usr/share/seabios")
        VM_QEMU_LIBS=$VM_ROOT/usr/lib/x86_64-linux-gnu:$VM_ROOT/lib/x86_64-linux-gnu
    fi
}
