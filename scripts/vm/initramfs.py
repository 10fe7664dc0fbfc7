#!/usr/bin/env python3
"""Builds the guest's initramfs (a gzip'd newc cpio) for scripts/vm/kernel-nbd.

    initramfs.py OUT --init FILE --busybox FILE --modules-dir DIR --module NAME... \
        --bin PATH... [--file SRC=DEST...]

--bin copies a dynamically linked program to /usr/bin/NAME, with every shared library `ldd`
names (and the dynamic loader) at the same path in the image. --module adds a kernel module
and, before it, the modules it depends on (the `depends=` of its .modinfo section), in load
order, to /lib/modules/NAME.ko; /lib/modules/order lists them. Compressed modules (.ko.xz,
.ko.gz, .ko.zst) are stored decompressed, so busybox insmod can load them.
"""

import argparse
import gzip
import io
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys


class Cpio:
    """A newc archive in memory: directories are created on the way to each entry."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1
        self.seen = set()

    def _entry(self, name, mode, data=b""):
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0]
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.buf.write(name_b)
        self._pad()
        self.buf.write(data)
        self._pad()

    def _pad(self):
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, path):
        path = path.strip("/")
        if not path or path in self.seen:
            return
        self.dir(os.path.dirname(path))
        self.seen.add(path)
        self._entry(path, 0o040755)

    def file(self, path, data, mode=0o755):
        path = path.strip("/")
        if path in self.seen:
            return
        self.dir(os.path.dirname(path))
        self.seen.add(path)
        self._entry(path, 0o100000 | mode, data)

    def symlink(self, path, target):
        path = path.strip("/")
        if path in self.seen:
            return
        self.dir(os.path.dirname(path))
        self.seen.add(path)
        self._entry(path, 0o120777, target.encode())

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def libraries(program):
    """Absolute paths of the shared libraries and loader `ldd` names for `program`."""
    out = subprocess.run(["ldd", program], capture_output=True, text=True)
    if out.returncode != 0:
        if "not a dynamic executable" in out.stdout + out.stderr:
            return []
        sys.exit(f"initramfs: ldd {program}: {out.stderr.strip()}")
    paths = []
    for line in out.stdout.splitlines():
        if "not found" in line:
            sys.exit(f"initramfs: {program}: library {line.strip()}")
        m = re.search(r"(?:=> )?(/\S+) \(0x", line)
        if m:
            paths.append(m.group(1))
    return paths


def stripped(program):
    """The program without debug sections (a debug build of cowd is mostly DWARF)."""
    if shutil.which("objcopy"):
        out = subprocess.run(["objcopy", "--strip-debug", program, "/dev/stdout"],
                             capture_output=True)
        if out.returncode == 0 and out.stdout:
            return out.stdout
    return read(program)


def modinfo(data):
    """The key=value strings of a module's .modinfo ELF section."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        sys.exit("initramfs: module is not a 64-bit ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i):
        return struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)

    names = section(shstrndx)
    for i in range(shnum):
        name_off, _, _, _, off, size = section(i)
        start = names[4] + name_off
        if data[start:data.index(b"\0", start)] == b".modinfo":
            return [s.decode(errors="replace") for s in data[off:off + size].split(b"\0") if s]
    return []


def decompress(path):
    data = read(path)
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout
    return data


def find_modules(modules_dir):
    """Module name -> file, for every module under modules_dir."""
    found = {}
    for root, _, files in os.walk(modules_dir):
        for f in files:
            m = re.fullmatch(r"(.+)\.ko(\.xz|\.gz|\.zst)?", f)
            if m:
                found[m.group(1).replace("-", "_")] = os.path.join(root, f)
    return found


def module_order(wanted, modules_dir):
    """[(name, data)] of `wanted` and their dependencies, each after what it depends on."""
    available = find_modules(modules_dir)
    order, done = [], set()

    def visit(name, chain):
        name = name.replace("-", "_")
        if name in done:
            return
        if name in chain:
            sys.exit(f"initramfs: module dependency loop: {' -> '.join(chain + [name])}")
        if name not in available:
            sys.exit(f"initramfs: no module {name} under {modules_dir}")
        data = decompress(available[name])
        for kv in modinfo(data):
            if kv.startswith("depends="):
                for dep in filter(None, kv[len("depends="):].split(",")):
                    visit(dep, chain + [name])
        done.add(name)
        order.append((name, data))

    for w in wanted:
        visit(w, [])
    return order


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--init", required=True)
    ap.add_argument("--busybox", required=True)
    ap.add_argument("--modules-dir", required=True)
    ap.add_argument("--module", action="append", default=[])
    ap.add_argument("--bin", action="append", default=[])
    ap.add_argument("--file", action="append", default=[], help="SRC=DEST")
    a = ap.parse_args()

    c = Cpio()
    for d in ["dev", "proc", "sys", "tmp", "run", "mnt", "root", "etc", "sbin", "usr/sbin"]:
        c.dir(d)
    c.file("init", read(a.init))
    c.file("bin/busybox", read(a.busybox))
    c.symlink("bin/sh", "busybox")
    for prog in a.bin:
        for lib in libraries(prog):
            c.file(lib, read(os.path.realpath(lib)))
        c.file("usr/bin/" + os.path.basename(prog), stripped(prog))
    for spec in a.file:
        src, dest = spec.split("=", 1)
        c.file(dest, read(src), mode=0o644)
    order = module_order(a.module, a.modules_dir)
    for name, data in order:
        c.file(f"lib/modules/{name}.ko", data, mode=0o644)
    c.file("lib/modules/order", "".join(n + "\n" for n, _ in order).encode(), mode=0o644)

    with open(a.out, "wb") as f:
        f.write(gzip.compress(c.finish(), compresslevel=1, mtime=0))


if __name__ == "__main__":
    main()
