#!/usr/bin/python3
"""NBD requests against a running cowd, through libnbd (the `nbd` Python module) and through a
minimal raw client for the requests libnbd refuses to send.

Usage: /usr/bin/python3 requests.py MODE URI [URI...]

  good URI           FUA writes, zeroes (plain, NO_HOLE, FAST_ZERO, FUA), trim, flush, cache,
                     block status (full and REQ_ONE), hole reads
  bad URI RO_URI     malformed / out-of-range requests get the right errno and the connection
                     keeps working; writes to a read-only export get EPERM
  simple URI         the same kinds of requests with structured replies switched off
  multiconn URI      two handles: a write on one, a flush on the other, both see the data
  big URI            TRIM / WRITE_ZEROES / BLOCK_STATUS of up to 4 GiB (export >= 5 GiB)

The export behind URI must be a fresh sparse file of at least 64 MiB (all zeroes, all holes).
Every check that fails raises; the script then prints the reason and exits 1.
"""

import errno
import os
import socket
import struct
import sys
import urllib.parse

import nbd

MiB = 1 << 20
KiB = 1 << 10
HOLE_ZERO = nbd.STATE_HOLE | nbd.STATE_ZERO


class Mismatch(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Mismatch(what)


def pattern(seed, n):
    """The same deterministic bytes as `cowd_tests::pattern` (xorshift64, little endian)."""
    m = (1 << 64) - 1
    x = ((seed * 0x9E3779B97F4A7C15) & m) | 1
    out = bytearray()
    while len(out) < n:
        x ^= (x << 13) & m
        x ^= x >> 7
        x ^= (x << 17) & m
        out += x.to_bytes(8, "little")
    return bytes(out[:n])


def is_zero(b):
    return not any(b)


def connect(uri, structured=True, meta=True):
    h = nbd.NBD()
    if meta:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.set_request_structured_replies(structured)
    h.connect_uri(uri)
    return h


def read_eq(h, off, want, what):
    got = h.pread(len(want), off)
    if bytes(got) != want:
        first = next(i for i in range(len(want)) if got[i] != want[i])
        raise Mismatch(
            f"{what}: {len(want)} bytes at {off} differ first at +{first} "
            f"(got {got[first]:#04x}, want {want[first]:#04x})"
        )


def read_zero(h, off, n, what):
    read_eq(h, off, bytes(n), what)


def extents(h, off, count, flags=0):
    """Block status of base:allocation as a list of (offset, length, flags)."""
    got = []

    def cb(ctx, start, entries, err):
        if ctx != nbd.CONTEXT_BASE_ALLOCATION:
            return 0
        check(not got, f"base:allocation reported twice for {off}+{count}")
        at = start
        for i in range(0, len(entries), 2):
            got.append((at, entries[i], entries[i + 1]))
            at += entries[i]
        return 0

    h.block_status(count, off, cb, flags)
    check(got, f"no base:allocation extents for {off}+{count}")
    return got


def state_at(h, off):
    """Flags of the single extent that starts at `off` (REQ_ONE)."""
    ext = extents(h, off, MiB, nbd.CMD_FLAG_REQ_ONE)
    check(len(ext) == 1, f"REQ_ONE at {off} returned {len(ext)} extents: {ext}")
    return ext[0]


# --------------------------------------------------------------------------------------------
# good requests


def mode_good(uri):
    h = connect(uri)
    size = h.get_size()
    check(size >= 64 * MiB, f"export too small: {size}")
    check(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION), "base:allocation not negotiated")
    check(h.get_structured_replies_negotiated(), "structured replies not negotiated")
    for cap in ("can_fua", "can_flush", "can_trim", "can_zero", "can_fast_zero", "can_cache"):
        check(getattr(h, cap)(), f"{cap} is false")

    # A fresh sparse export: reads as zeroes, one hole from start to end.
    read_zero(h, 0, 256 * KiB, "fresh export")
    read_zero(h, size - 4096, 4096, "fresh export end")
    ext = extents(h, 0, size)
    check(sum(e[1] for e in ext) <= size, f"extents beyond the request: {ext}")
    check(all(e[2] == HOLE_ZERO for e in ext), f"fresh export has data: {ext}")

    # FUA write (seed 1 at 1 MiB, 64 KiB; the Rust side checks the backing file too).
    p1 = pattern(1, 64 * KiB)
    h.pwrite(p1, 1 * MiB, nbd.CMD_FLAG_FUA)
    read_eq(h, 1 * MiB, p1, "FUA write")
    # Unaligned FUA write inside it.
    p2 = pattern(2, 1000)
    h.pwrite(p2, 1 * MiB + 12345, nbd.CMD_FLAG_FUA)
    want = bytearray(p1)
    want[12345 : 12345 + 1000] = p2
    read_eq(h, 1 * MiB, bytes(want), "unaligned FUA write over data")
    # Plain write + flush.
    p3 = pattern(3, 128 * KiB)
    h.pwrite(p3, 2 * MiB)
    h.flush()
    read_eq(h, 2 * MiB, p3, "write then flush")

    # Block status: hole | data | hole | data | hole, exactly at the 64 KiB-aligned places.
    ext = extents(h, 0, 4 * MiB)
    want_ext = [
        (0, 1 * MiB, HOLE_ZERO),
        (1 * MiB, 64 * KiB, 0),
        (1 * MiB + 64 * KiB, 1 * MiB - 64 * KiB, HOLE_ZERO),
        (2 * MiB, 128 * KiB, 0),
        (2 * MiB + 128 * KiB, 2 * MiB - 128 * KiB, HOLE_ZERO),
    ]
    check(ext == want_ext, f"block status 0+4M: got {ext}, want {want_ext}")
    # A request starting inside data begins with the rest of that data.
    ext = extents(h, 1 * MiB + 16 * KiB, 2 * MiB)
    check(ext[0] == (1 * MiB + 16 * KiB, 48 * KiB, 0), f"block status from inside data: {ext}")
    # REQ_ONE: exactly one extent, not beyond the request.
    check(state_at(h, 0) == (0, 1 * MiB, HOLE_ZERO), "REQ_ONE at 0")
    one = extents(h, 1 * MiB, 4 * KiB, nbd.CMD_FLAG_REQ_ONE)
    check(one == [(1 * MiB, 4 * KiB, 0)], f"REQ_ONE clipped to the request: {one}")
    one = extents(h, 0, 8 * MiB, nbd.CMD_FLAG_REQ_ONE)
    check(len(one) == 1 and one[0][1] == 1 * MiB, f"REQ_ONE over 8M: {one}")
    # Last byte of the export.
    check(extents(h, size - 1, 1) == [(size - 1, 1, HOLE_ZERO)], "block status of the last byte")

    # Reads of holes and of ranges spanning data and holes.
    read_zero(h, 5 * MiB, 2 * MiB, "hole read")
    chunks = []

    def chunk_cb(buf, off, status, err):
        chunks.append((off, len(buf), status))
        return 0

    buf = h.pread_structured(256 * KiB, 8 * MiB, chunk_cb)
    check(is_zero(buf), "structured hole read has data")
    check(
        chunks and all(c[2] in (nbd.READ_HOLE, nbd.READ_DATA) for c in chunks),
        f"hole read chunks: {chunks}",
    )
    check(sum(c[1] for c in chunks) == 256 * KiB, f"hole read chunks do not cover it: {chunks}")
    check(any(c[2] == nbd.READ_HOLE for c in chunks), f"hole read sent no hole chunk: {chunks}")
    span = h.pread(64 * KiB + 8 * KiB, 1 * MiB - 4 * KiB)
    check(is_zero(span[: 4 * KiB]), "span read: hole before data")
    check(bytes(span[4 * KiB : 4 * KiB + 64 * KiB]) == bytes(want), "span read: data")
    check(is_zero(span[4 * KiB + 64 * KiB :]), "span read: hole after data")
    # DF read over data and hole.
    chunks.clear()
    buf = h.pread_structured(128 * KiB, 1 * MiB, chunk_cb, nbd.CMD_FLAG_DF)
    check(bytes(buf[: 64 * KiB]) == bytes(want) and is_zero(buf[64 * KiB :]), "DF read")
    check(len([c for c in chunks if c[2] != nbd.READ_ERROR]) == 1, f"DF read chunks: {chunks}")

    # Zeroes: 4 regions of 1 MiB filled with data, each zeroed in the middle with other flags.
    base = 8 * MiB
    variants = [
        ("zero (may punch)", 0),
        ("zero NO_HOLE", nbd.CMD_FLAG_NO_HOLE),
        ("zero FUA", nbd.CMD_FLAG_FUA),
        ("zero NO_HOLE|FUA", nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA),
    ]
    for i, (what, flags) in enumerate(variants):
        off = base + i * MiB
        p = pattern(10 + i, MiB)
        h.pwrite(p, off)
        zo, zl = 4096 + 1000, 300 * KiB + 7  # unaligned on purpose
        h.zero(zl, off + zo, flags)
        want = p[:zo] + bytes(zl) + p[zo + zl :]
        read_eq(h, off, want, what)
    # A zero that may punch leaves an aligned range reported as zero.
    off = base + 4 * MiB
    h.pwrite(pattern(20, MiB), off)
    h.zero(256 * KiB, off + 256 * KiB)
    st = state_at(h, off + 256 * KiB)
    check(st[2] & nbd.STATE_ZERO, f"punched range not reported as zero: {st}")
    read_eq(h, off, pattern(20, MiB)[: 256 * KiB] + bytes(256 * KiB) + pattern(20, MiB)[512 * KiB :],
            "zero then block status")
    # FAST_ZERO: either done (reads as zeroes) or refused with ENOTSUP and nothing changed.
    for i, flags in enumerate(
        [nbd.CMD_FLAG_FAST_ZERO, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE]
    ):
        off = base + (5 + i) * MiB
        p = pattern(30 + i, MiB)
        h.pwrite(p, off)
        try:
            h.zero(512 * KiB, off + 128 * KiB, flags)
            want = p[: 128 * KiB] + bytes(512 * KiB) + p[640 * KiB :]
        except nbd.Error as e:
            check(e.errnum == errno.ENOTSUP, f"fast zero failed with {e.errnum}: {e}")
            want = p
        read_eq(h, off, want, f"fast zero flags {flags:#x}")
    # A zero much larger than the maximum payload.
    h.pwrite(pattern(40, 4096), 63 * MiB)
    h.zero(48 * MiB, 16 * MiB)
    read_zero(h, 63 * MiB, 4096, "large zero")

    # Trim: neighbours are kept; on a regular file cowd punches, so the range reads as zeroes.
    off = 3 * MiB
    p = pattern(50, MiB)
    h.pwrite(p, off)
    h.trim(256 * KiB, off + 128 * KiB)
    got = h.pread(MiB, off)
    check(bytes(got[: 128 * KiB]) == p[: 128 * KiB], "trim changed data before the range")
    check(bytes(got[384 * KiB :]) == p[384 * KiB :], "trim changed data after the range")
    check(is_zero(got[128 * KiB : 384 * KiB]), "trimmed range of a file does not read as zeroes")
    h.trim(4 * KiB, off + 900 * KiB, nbd.CMD_FLAG_FUA)
    check(bytes(h.pread(4096, off + 896 * KiB)) == p[896 * KiB : 900 * KiB], "FUA trim neighbour")

    # Flush and cache.
    h.flush()
    h.cache(4 * MiB, 0)
    h.cache(1, size - 1)
    read_eq(h, 1 * MiB + 12345, p2, "data after cache")

    h.shutdown()


# --------------------------------------------------------------------------------------------
# bad requests


def expect_errno(h, what, want, fn):
    try:
        fn()
    except nbd.Error as e:
        wants = want if isinstance(want, tuple) else (want,)
        check(
            e.errnum in wants,
            f"{what}: errno {e.errnum} ({errno.errorcode.get(e.errnum)}), "
            f"want {[errno.errorcode[w] for w in wants]}: {e.string}",
        )
        # libnbd reports server errors as "command failed"; anything else was refused locally.
        check("command failed" in e.string, f"{what}: not sent to the server: {e.string}")
    else:
        raise Mismatch(f"{what}: succeeded, want errno {want}")


def mode_bad(uri, ro_uri):
    h = connect(uri)
    size = h.get_size()
    # Without strict mode libnbd sends everything below to the server instead of refusing it.
    h.set_strict_mode(0)
    good = pattern(60, 4096)
    h.pwrite(good, 0)

    def alive(after):
        got = h.pread(4096, 0)
        check(bytes(got) == good, f"connection broken after {after}")

    W = b"\xa5" * 4096
    cases = [
        ("READ beyond end", errno.EINVAL, lambda: h.pread(4096, size - 100)),
        ("READ at end", errno.EINVAL, lambda: h.pread(1, size)),
        ("READ far beyond end", errno.EINVAL, lambda: h.pread(512, 1 << 62)),
        ("WRITE beyond end", errno.ENOSPC, lambda: h.pwrite(W, size - 100)),
        ("WRITE at end", errno.ENOSPC, lambda: h.pwrite(b"x", size)),
        ("READ wrapping 2^64", errno.EINVAL, lambda: h.pread(4096, (1 << 64) - 100)),
        ("WRITE wrapping 2^64", errno.ENOSPC, lambda: h.pwrite(W, (1 << 64) - 100)),
        ("zero-length READ", errno.EINVAL, lambda: h.pread(0, 0)),
        ("zero-length WRITE", errno.EINVAL, lambda: h.pwrite(b"", 0)),
        ("zero-length TRIM", errno.EINVAL, lambda: h.trim(0, 0)),
        ("zero-length WRITE_ZEROES", errno.EINVAL, lambda: h.zero(0, 0)),
        # libnbd (1.14 and later) refuses READs over 64 MiB client-side with ERANGE even in
        # non-strict mode, so a READ of 0xffffffff is sent by the raw client below; this one
        # is over the advertised 32 MiB maximum but under libnbd's limit.
        ("READ over max payload", errno.EINVAL, lambda: h.pread((32 << 20) + 1, 0)),
        ("WRITE over max payload", (errno.EOVERFLOW, errno.EINVAL),
         lambda: h.pwrite(bytes((32 << 20) + 4096), 0)),
        ("READ with flag 1<<9", errno.EINVAL, lambda: h.pread(512, 0, 1 << 9)),
        ("READ with flag 1<<15", errno.EINVAL, lambda: h.pread(512, 0, 1 << 15)),
        ("WRITE with NO_HOLE", errno.EINVAL, lambda: h.pwrite(W, 0, nbd.CMD_FLAG_NO_HOLE)),
        ("WRITE with flag 1<<12", errno.EINVAL, lambda: h.pwrite(W, 0, 1 << 12)),
        ("TRIM with REQ_ONE", errno.EINVAL, lambda: h.trim(512, 0, nbd.CMD_FLAG_REQ_ONE)),
        ("FLUSH with flag 1<<9", errno.EINVAL, lambda: h.flush(1 << 9)),
        ("TRIM beyond end", errno.EINVAL, lambda: h.trim(4096, size - 100)),
        ("TRIM wrapping 2^64", errno.EINVAL, lambda: h.trim(4096, (1 << 64) - 100)),
        ("WRITE_ZEROES beyond end", errno.ENOSPC, lambda: h.zero(4096, size - 100)),
        ("WRITE_ZEROES wrapping 2^64", errno.ENOSPC, lambda: h.zero(4096, (1 << 64) - 100)),
        ("CACHE beyond end", errno.EINVAL, lambda: h.cache(4096, size - 100)),
        ("BLOCK_STATUS beyond end", errno.EINVAL,
         lambda: h.block_status(4096, size, lambda *a: 0)),
    ]
    for what, want, fn in cases:
        expect_errno(h, what, want, fn)
        alive(what)
    # The refused writes changed nothing: the last 4 KiB are still zero.
    read_zero(h, size - 4096, 4096, "end of export after refused writes")
    h.shutdown()

    # A connection that selected no metadata context: BLOCK_STATUS is refused.
    h = connect(uri, meta=False)
    h.set_strict_mode(0)
    check(not h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION), "context without asking")
    expect_errno(h, "BLOCK_STATUS without context", errno.EINVAL,
                 lambda: h.block_status(4096, 0, lambda *a: 0))
    alive("BLOCK_STATUS without context")
    h.shutdown()

    # Read-only export: writes of every kind are EPERM. libnbd 1.14 in non-strict mode does
    # send them (it would refuse them locally with STRICT_COMMANDS because READ_ONLY is set).
    r = connect(ro_uri)
    check(r.is_read_only(), "read-only export not advertised read-only")
    check(not r.can_trim() and not r.can_zero(), "read-only export offers trim/zero")
    rsize = r.get_size()
    before = bytes(r.pread(4096, 0))
    r.set_strict_mode(0)
    for what, fn in [
        ("WRITE on read-only", lambda: r.pwrite(b"\x01" * 4096, 0)),
        ("FUA WRITE on read-only", lambda: r.pwrite(b"\x01" * 4096, 0, nbd.CMD_FLAG_FUA)),
        ("TRIM on read-only", lambda: r.trim(4096, 0)),
        ("WRITE_ZEROES on read-only", lambda: r.zero(4096, 0)),
        ("WRITE_ZEROES NO_HOLE on read-only", lambda: r.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE)),
    ]:
        expect_errno(r, what, errno.EPERM, fn)
        check(bytes(r.pread(4096, 0)) == before, f"read-only export changed after {what}")
    expect_errno(r, "READ beyond end of read-only", errno.EINVAL, lambda: r.pread(1, rsize))
    r.flush()
    r.shutdown()

    # The raw client sends what libnbd never will.
    for structured in (True, False):
        raw_bad_requests(uri, structured, good)


# --------------------------------------------------------------------------------------------
# a minimal raw NBD client

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCTURED_MAGIC = 0x668E33EF
OPT_GO, OPT_STRUCTURED_REPLY = 7, 8
REP_ACK, REP_INFO = 1, 3
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_BLOCK_STATUS = 0, 1, 2, 3, 7
CHUNK_NONE, CHUNK_DATA, CHUNK_HOLE = 0, 1, 2


class Raw:
    """Fixed-newstyle client speaking the wire protocol directly."""

    def __init__(self, uri, structured):
        u = urllib.parse.urlparse(uri)
        q = urllib.parse.parse_qs(u.query)
        if u.scheme == "nbd+unix":
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.connect(q["socket"][0])
        else:
            self.s = socket.create_connection((u.hostname, u.port or 10809))
        self.s.settimeout(20)
        name = u.path.lstrip("/").encode()
        magic, opt, _hflags = struct.unpack(">QQH", self.recv(18))
        check(magic == NBDMAGIC and opt == IHAVEOPT, "raw: bad server greeting")
        self.s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
        self.structured = False
        if structured:
            self.option(OPT_STRUCTURED_REPLY, b"")
            self.structured = True
        self.size = None
        self.option(OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        check(self.size is not None, "raw: GO without NBD_INFO_EXPORT")
        self.cookie = 0

    def recv(self, n):
        b = bytearray()
        while len(b) < n:
            part = self.s.recv(n - len(b))
            if not part:
                raise Mismatch(f"raw: server closed the connection ({len(b)}/{n} bytes)")
            b += part
        return bytes(b)

    def option(self, code, data):
        self.s.sendall(struct.pack(">QII", IHAVEOPT, code, len(data)) + data)
        while True:
            magic, opt, kind, n = struct.unpack(">QIII", self.recv(20))
            payload = self.recv(n)
            check(magic == OPT_REPLY_MAGIC and opt == code, f"raw: bad option reply to {code}")
            if kind == REP_ACK:
                return
            check(kind == REP_INFO, f"raw: option {code} refused with {kind:#x}: {payload!r}")
            if struct.unpack(">H", payload[:2])[0] == 0:
                self.size = struct.unpack(">Q", payload[2:10])[0]

    def request(self, kind, offset, length, flags=0, payload=b""):
        """Sends one request and returns (errno, data) of its reply."""
        self.cookie += 1
        hdr = struct.pack(">IHHQQI", REQUEST_MAGIC, flags, kind, self.cookie, offset, length)
        self.s.sendall(hdr + payload)
        return self.reply(self.cookie, length if kind == CMD_READ else 0)

    def reply(self, cookie, read_len):
        magic = struct.unpack(">I", self.recv(4))[0]
        if magic == SIMPLE_MAGIC:
            err, c = struct.unpack(">IQ", self.recv(12))
            check(c == cookie, f"raw: reply for cookie {c}, want {cookie}")
            return err, (self.recv(read_len) if err == 0 else b"")
        check(magic == STRUCTURED_MAGIC, f"raw: bad reply magic {magic:#x}")
        check(self.structured, "raw: structured reply without negotiating it")
        pieces = []  # (offset, bytes) of content chunks; holes read as zeroes
        err = 0
        while True:
            flags, kind, c, n = struct.unpack(">HHQI", self.recv(16))
            body = self.recv(n)
            check(c == cookie, f"raw: chunk for cookie {c}, want {cookie}")
            if kind & 0x8000:
                err, mlen = struct.unpack(">IH", body[:6])
                check(err != 0 and 6 + mlen <= n, f"raw: malformed error chunk {body!r}")
            elif kind == CHUNK_DATA:
                pieces.append((struct.unpack(">Q", body[:8])[0], body[8:]))
            elif kind == CHUNK_HOLE:
                off, hlen = struct.unpack(">QI", body)
                pieces.append((off, bytes(hlen)))
            else:
                check(kind == CHUNK_NONE, f"raw: unexpected chunk type {kind}")
            if flags & 1:
                break
        if err:
            return err, b""
        data = bytearray(read_len)
        covered = 0
        for off, b in pieces:
            check(self.base <= off and off + len(b) <= self.base + read_len, "raw: chunk outside")
            data[off - self.base : off - self.base + len(b)] = b
            covered += len(b)
        check(covered == read_len, f"raw: chunks cover {covered} of {read_len} bytes")
        return 0, bytes(data)

    def read(self, offset, length, flags=0):
        self.base = offset
        return self.request(CMD_READ, offset, length, flags)

    def close(self):
        self.cookie += 1
        self.s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, self.cookie, 0, 0))
        self.s.close()


def raw_bad_requests(uri, structured, good):
    mode = "structured" if structured else "simple"
    c = Raw(uri, structured)

    def expect(what, want, reply):
        err, _ = reply
        check(err == want, f"raw {mode}: {what}: errno {err}, want {want}")
        err, data = c.read(0, 4096)
        check(err == 0 and data == good, f"raw {mode}: connection broken after {what}")

    expect("READ of 0xffffffff bytes", errno.EINVAL, c.read(0, 0xFFFFFFFF))
    expect("READ of 0xffffffff bytes at the end", errno.EINVAL, c.read(c.size - 1, 0xFFFFFFFF))
    expect("zero-length READ", errno.EINVAL, c.read(0, 0))
    expect("READ wrapping 2^64", errno.EINVAL, c.read((1 << 64) - 512, 4096))
    expect("unknown command 42", errno.EINVAL, c.request(42, 0, 512))
    expect("unknown command 0xffff", errno.EINVAL, c.request(0xFFFF, 0, 0))
    expect("READ with flags 0xffff", errno.EINVAL, c.read(0, 512, 0xFFFF))
    expect("BLOCK_STATUS without a context", errno.EINVAL, c.request(CMD_BLOCK_STATUS, 0, 4096))
    expect("FLUSH with a length", errno.EINVAL, c.request(CMD_FLUSH, 0, 4096))
    expect("WRITE over max payload", errno.EOVERFLOW,
           c.request(CMD_WRITE, 0, (32 << 20) + 1, 0, bytes((32 << 20) + 1)))
    expect("WRITE with flags 0xfffe", errno.EINVAL,
           c.request(CMD_WRITE, 8192, 4, 0xFFFE, b"abcd"))
    check(c.read(8192, 4) == (0, bytes(4)), f"raw {mode}: refused WRITE wrote")
    # A good write and read through the same raw connection.
    err, _ = c.request(CMD_WRITE, 8192, 4, 0, b"abcd")
    check(err == 0, f"raw {mode}: write failed with {err}")
    check(c.read(8190, 8) == (0, b"\0\0abcd\0\0"), f"raw {mode}: read back")
    c.request(CMD_WRITE, 8192, 4, 0, bytes(4))
    c.close()


# --------------------------------------------------------------------------------------------
# requests of up to 4 GiB


def mode_big(uri):
    """TRIM, WRITE_ZEROES and BLOCK_STATUS with lengths just under 4 GiB (the largest a 32-bit
    length field allows) on an export of at least 5 GiB."""
    h = connect(uri)
    size = h.get_size()
    check(size >= 5 << 30, f"export too small for 4 GiB requests: {size}")
    top = (1 << 32) - 4096  # largest 4 KiB multiple below 4 GiB
    marks = [(1 << 30, 11), (top, 12), (top + 4096 + 4096, 13), (4096 - 512, 14)]

    def write_marks():
        for off, seed in marks:
            h.pwrite(pattern(seed, 4096), off)

    def extents_cover(off, count):
        ext = extents(h, off, count)
        total = sum(e[1] for e in ext)
        check(0 < total <= count, f"block status {off}+{count} covers {total}")
        return ext

    write_marks()
    ext = extents_cover(0, 0xFFFFFFFF)
    # The mark at 3.5 KiB allocates the first two 4 KiB blocks.
    check(ext[:2] == [(0, 8192, 0), (8192, (1 << 30) - 8192, HOLE_ZERO)],
          f"block status of 4 GiB starts with {ext[:2]}")
    # WRITE_ZEROES of 4 GiB - 4 KiB starting at 4 KiB: the marks at 1 GiB and at `top`
    # disappear, the one before 4 KiB keeps its first 512 bytes, the one above is kept.
    h.zero(top, 4096)
    read_eq(h, 4096 - 512, pattern(14, 512), "before a 4 GiB zero")
    read_zero(h, 4096, 8192, "start of a 4 GiB zero")
    read_zero(h, 1 << 30, 4096, "middle of a 4 GiB zero")
    read_zero(h, top, 4096, "end of a 4 GiB zero")
    read_eq(h, top + 8192, pattern(13, 4096), "after a 4 GiB zero")
    ext = extents_cover(4096, top)
    check(all(e[2] & nbd.STATE_ZERO for e in ext if e[0] < top + 4096),
          f"zeroed 4 GiB not reported as zero: {ext[:4]}")
    # TRIM of 4 GiB - 4 KiB with FUA: same shape.
    write_marks()
    h.trim(top, 4096, nbd.CMD_FLAG_FUA)
    read_eq(h, 4096 - 512, pattern(14, 512), "before a 4 GiB trim")
    read_zero(h, 1 << 30, 4096, "middle of a 4 GiB trim")
    read_eq(h, top + 8192, pattern(13, 4096), "after a 4 GiB trim")
    # The largest length at all: 0xffffffff bytes from 1.
    write_marks()
    h.zero(0xFFFFFFFF, 1)
    read_eq(h, 0, bytes(1), "byte before a 0xffffffff zero")
    read_zero(h, 1, 4096, "start of a 0xffffffff zero")
    read_zero(h, 1 << 30, 4096, "middle of a 0xffffffff zero")
    read_eq(h, top + 8192, pattern(13, 4096), "after a 0xffffffff zero")
    # Reads at the top of the export.
    h.pwrite(pattern(15, 4096), size - 4096, nbd.CMD_FLAG_FUA)
    read_eq(h, size - 4096, pattern(15, 4096), "end of a big export")
    h.flush()
    h.shutdown()


# --------------------------------------------------------------------------------------------
# simple replies


def mode_simple(uri):
    h = connect(uri, structured=False)
    check(not h.get_structured_replies_negotiated(), "structured replies negotiated anyway")
    check(not h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION), "meta context without structured")
    check(not h.can_df(), "DF offered without structured replies")
    size = h.get_size()
    read_zero(h, 0, 128 * KiB, "fresh export (simple)")
    p = pattern(70, 256 * KiB)
    h.pwrite(p, 4 * MiB)
    read_eq(h, 4 * MiB, p, "write/read (simple)")
    h.pwrite(pattern(71, 777), 4 * MiB + 3, nbd.CMD_FLAG_FUA)
    want = p[:3] + pattern(71, 777) + p[780:]
    read_eq(h, 4 * MiB, want, "unaligned FUA write (simple)")
    span = h.pread(512 * KiB, 4 * MiB - 128 * KiB)
    check(is_zero(span[: 128 * KiB]), "span read (simple): hole")
    check(bytes(span[128 * KiB : 384 * KiB]) == want, "span read (simple): data")
    check(is_zero(span[384 * KiB :]), "span read (simple): hole after")
    h.zero(64 * KiB, 4 * MiB + 64 * KiB)
    h.zero(64 * KiB, 4 * MiB + 128 * KiB, nbd.CMD_FLAG_NO_HOLE)
    want = want[: 64 * KiB] + bytes(128 * KiB) + want[192 * KiB :]
    read_eq(h, 4 * MiB, want, "zero (simple)")
    h.trim(4096, 4 * MiB + 200 * KiB)
    h.flush()
    h.cache(MiB, 0)
    # Errors with simple replies carry no payload: the stream stays in sync.
    h.set_strict_mode(0)
    for what, want_errno, fn in [
        ("READ beyond end (simple)", errno.EINVAL, lambda: h.pread(4096, size - 1)),
        ("zero-length READ (simple)", errno.EINVAL, lambda: h.pread(0, 0)),
        ("READ over max payload (simple)", errno.EINVAL, lambda: h.pread((32 << 20) + 4096, 0)),
        ("READ with DF (simple)", errno.EINVAL, lambda: h.pread(4096, 0, nbd.CMD_FLAG_DF)),
        ("WRITE beyond end (simple)", errno.ENOSPC, lambda: h.pwrite(bytes(4096), size - 1)),
        ("READ with flag 1<<9 (simple)", errno.EINVAL, lambda: h.pread(4096, 0, 1 << 9)),
    ]:
        expect_errno(h, what, want_errno, fn)
        read_eq(h, 4 * MiB, want[: 64 * KiB], f"read after {what}")
    h.shutdown()


# --------------------------------------------------------------------------------------------
# multi-conn


def mode_multiconn(uri):
    a = connect(uri)
    b = connect(uri)
    check(a.can_multi_conn() and b.can_multi_conn(), "multi-conn not advertised")
    p = pattern(80, 512 * KiB)
    a.pwrite(p, 6 * MiB)
    b.flush()
    read_eq(b, 6 * MiB, p, "handle B reads A's write")
    read_eq(a, 6 * MiB, p, "handle A reads its write")
    q = pattern(81, 64 * KiB)
    b.pwrite(q, 6 * MiB + 100, nbd.CMD_FLAG_FUA)
    a.flush()
    want = p[:100] + q + p[100 + 64 * KiB :]
    read_eq(a, 6 * MiB, want, "handle A reads B's FUA write")
    read_eq(b, 6 * MiB, want, "handle B reads its FUA write")
    # Interleaved writes through both handles with async commands in flight.
    cookies = []
    for i in range(32):
        h = a if i % 2 == 0 else b
        buf = nbd.Buffer.from_bytearray(bytearray(pattern(100 + i, 4096)))
        cookies.append((h, h.aio_pwrite(buf, 8 * MiB + i * 4096), buf))
    for h, c, _buf in cookies:
        while not h.aio_command_completed(c):
            h.poll(-1)
    b.flush()
    for i in range(32):
        read_eq(a if i % 2 else b, 8 * MiB + i * 4096, pattern(100 + i, 4096), f"aio write {i}")
    a.shutdown()
    b.shutdown()


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    mode, args = sys.argv[1], sys.argv[2:]
    fn = {
        "good": mode_good,
        "bad": mode_bad,
        "simple": mode_simple,
        "multiconn": mode_multiconn,
        "big": mode_big,
    }.get(mode)
    if fn is None:
        print(f"unknown mode {mode}", file=sys.stderr)
        return 2
    try:
        fn(*args)
    except (Mismatch, nbd.Error) as e:
        print(f"requests.py {mode}: FAILED: {e}", file=sys.stderr)
        return 1
    print(f"requests.py {mode}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
