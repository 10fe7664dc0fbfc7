#!/usr/bin/python3
"""Self-checking 4 KiB sectors, the way blksnap's tests check snapshots: every sector carries a
checksum, a sequence number and its own offset, so a backup can be checked without a copy of the
device at the snapshot point.

Usage: /usr/bin/python3 sectors.py MODE ...

  fill URI [--seq N]
      Writes every sector of the export with sequence N (default 1).
  write-random URI STOP_FILE MAP_OUT [--fill-seq N] [--threads T] [--seed S] [--max-seconds S]
      Starting from a device filled with --fill-seq (default 1), T threads (own libnbd handle,
      own contiguous share of the 64 KiB blocks) write runs of 1 to 40 new sectors with increasing sequence numbers, placed
      exactly on, across and beside 64 KiB block edges; a third of the runs go out as two
      requests cut at an odd byte (partial-sector writes: the sector is whole once both are
      done). They also zero runs and whole blocks (WRITE_ZEROES) and trim them (TRIM; cowd keeps
      pending blocks as they are, so each trimmed sector is read back and must be either its old
      self or zeroes). Stops when STOP_FILE exists, flushes, and writes MAP_OUT: the expected
      sequence of every sector (u32 little endian; 0 = zeroes). Prints "ready" when connected,
      then one JSON line of counts; exits 1 on any failed request or bad read-back.
  verify FILE (--expect-seq N | --max-seq N | --expect-map MAP)
      Checks every sector of FILE (an image or a backup): magic, own offset, checksum, and its
      sequence: exactly N; at most N; or what MAP says (0: the sector must be all zeroes).
      Prints a summary; exits 1 with the first problems.

Sector layout: magic "COWDSECT" | offset u64 | seq u64 | crc32 u32 of the rest | random payload.
"""

import argparse
import array
import json
import os
import random
import struct
import sys
import threading
import time
import zlib

import nbd

SECTOR = 4096
BLOCK = 64 * 1024
PER_BLOCK = BLOCK // SECTOR
MAGIC = b"COWDSECT"
HEAD = struct.Struct("<8sQQ")
ZERO = bytes(SECTOR)


def sector(index, seq, rng):
    head = HEAD.pack(MAGIC, index * SECTOR, seq)
    payload = rng.randbytes(SECTOR - HEAD.size - 4)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + struct.pack("<I", crc) + payload


def check(data, index):
    """The sequence of a valid sector at `index`, or a string saying what is wrong."""
    if data == ZERO:
        return "zeroes"
    magic, off, seq = HEAD.unpack_from(data)
    if magic != MAGIC:
        return "no magic"
    (crc,) = struct.unpack_from("<I", data, HEAD.size)
    if zlib.crc32(data[HEAD.size + 4:], zlib.crc32(data[:HEAD.size])) != crc:
        return f"bad checksum (seq {seq})"
    if off != index * SECTOR:
        return f"carries offset {off}"
    return seq


def fill(a):
    h = nbd.NBD()
    h.connect_uri(a.uri)
    size = h.get_size()
    rng = random.Random(a.seq)
    chunk = 1024  # sectors per request
    for first in range(0, size // SECTOR, chunk):
        n = min(chunk, size // SECTOR - first)
        h.pwrite(b"".join(sector(first + i, a.seq, rng) for i in range(n)), first * SECTOR)
    h.flush()
    h.shutdown()
    print(json.dumps({"sectors": size // SECTOR, "seq": a.seq}))


class Writer(threading.Thread):
    def __init__(self, a, t, seqs, counter):
        super().__init__(daemon=True)
        self.h = nbd.NBD()
        self.h.connect_uri(a.uri)
        self.blocks = self.h.get_size() // BLOCK
        # Thread t owns a contiguous share of the blocks, so runs cross edges inside it.
        self.lo = self.blocks * t // a.threads
        self.hi = self.blocks * (t + 1) // a.threads
        self.rng = random.Random(a.seed * 100 + t)
        self.seqs = seqs
        self.counter = counter
        self.stop_file = a.stop_file
        self.deadline = time.time() + a.max_seconds
        self.counts = {"runs": 0, "split_runs": 0, "zeroes": 0, "trims": 0, "sectors": 0}
        self.errors = []

    def mine(self, block):
        return self.lo <= block < self.hi

    def run_at(self):
        """A run of sectors in blocks this thread owns: on, across or beside a block edge."""
        b = self.rng.randrange(self.lo, self.hi)
        edge = b * PER_BLOCK
        n = self.rng.randint(1, 40)
        kind = self.rng.randrange(4)
        if kind == 0:
            first = edge  # starts on the edge
        elif kind == 1:
            first = edge - n  # ends on the edge
        elif kind == 2:
            first = edge - self.rng.randint(1, max(1, n - 1))  # across it
        else:
            first = edge + self.rng.choice([1, PER_BLOCK - 1 - n, self.rng.randrange(PER_BLOCK)])
        first = max(first, 0)
        last = min(first + n, self.blocks * PER_BLOCK)
        # Keep the sectors of blocks this thread owns.
        runs, cur = [], None
        for s in range(first, last):
            if self.mine(s // PER_BLOCK):
                if cur and cur[1] == s:
                    cur[1] = s + 1
                else:
                    cur = [s, s + 1]
                    runs.append(cur)
        return runs

    def next_seq(self):
        with self.counter[1]:
            self.counter[0] += 1
            return self.counter[0]

    def write_run(self, first, end):
        seq = self.next_seq()
        data = b"".join(sector(s, seq, self.rng) for s in range(first, end))
        if len(data) > 1 and self.rng.random() < 0.33:
            cut = self.rng.randrange(1, len(data))
            if cut % SECTOR == 0:
                cut -= 1
            pieces = [(0, cut), (cut, len(data))]
            if self.rng.random() < 0.5:
                pieces.reverse()
            for a, b in pieces:
                self.h.pwrite(data[a:b], first * SECTOR + a)
            self.counts["split_runs"] += 1
        else:
            self.h.pwrite(data, first * SECTOR)
        for s in range(first, end):
            self.seqs[s] = seq
        self.counts["runs"] += 1
        self.counts["sectors"] += end - first

    def zero_or_trim(self, first, end, trim):
        off, n = first * SECTOR, (end - first) * SECTOR
        if trim:
            self.h.trim(n, off)
            got = self.h.pread(n, off)
            for i, s in enumerate(range(first, end)):
                d = got[i * SECTOR:(i + 1) * SECTOR]
                r = check(d, s)
                if r == "zeroes":
                    self.seqs[s] = 0
                elif r != self.seqs[s]:
                    self.errors.append(f"sector {s} after TRIM: {r}, expected seq {self.seqs[s]} "
                                       "or zeroes")
            self.counts["trims"] += 1
        else:
            self.h.zero(n, off, nbd.CMD_FLAG_NO_HOLE if self.rng.random() < 0.5 else 0)
            for s in range(first, end):
                self.seqs[s] = 0
            self.counts["zeroes"] += 1

    def run(self):
        i = 0
        try:
            while not self.errors:
                i += 1
                if i % 4 == 0 and (os.path.exists(self.stop_file) or time.time() > self.deadline):
                    break
                r = self.rng.random()
                if r < 0.8:
                    for first, end in self.run_at():
                        self.write_run(first, end)
                else:
                    trim = r >= 0.9
                    if self.rng.random() < 0.5:
                        # A whole block this thread owns.
                        b = self.rng.randrange(self.lo, self.hi)
                        self.zero_or_trim(b * PER_BLOCK, (b + 1) * PER_BLOCK, trim)
                    else:
                        for first, end in self.run_at():
                            self.zero_or_trim(first, end, trim)
            self.h.flush()
        except nbd.Error as e:
            self.errors.append(f"{e} (errno {e.errno})")
        finally:
            self.h.shutdown()


def write_random(a):
    h = nbd.NBD()
    h.connect_uri(a.uri)
    size = h.get_size()
    h.shutdown()
    seqs = array.array("I", [a.fill_seq]) * (size // SECTOR)
    counter = [a.fill_seq, threading.Lock()]
    writers = [Writer(a, t, seqs, counter) for t in range(a.threads)]
    print("ready", flush=True)
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    with open(a.map_out, "wb") as f:
        f.write(seqs.tobytes())
    counts = {k: sum(w.counts[k] for w in writers) for k in writers[0].counts}
    errors = [e for w in writers for e in w.errors]
    print(json.dumps({"counts": counts, "last_seq": counter[0], "errors": errors[:20]}),
          flush=True)
    sys.exit(1 if errors else 0)


def verify(a):
    expect = None
    if a.expect_map:
        expect = array.array("I")
        with open(a.expect_map, "rb") as f:
            expect.frombytes(f.read())
    problems, seqs = [], {}
    with open(a.file, "rb") as f:
        index = 0
        while True:
            chunk = f.read(256 * SECTOR)
            if not chunk:
                break
            for i in range(0, len(chunk), SECTOR):
                s = index + i // SECTOR
                r = check(chunk[i:i + SECTOR], s)
                if expect is not None:
                    want = expect[s]
                    ok = (r == "zeroes") if want == 0 else (r == want)
                    what = f"expected {'zeroes' if want == 0 else f'seq {want}'}"
                elif a.expect_seq is not None:
                    ok, what = r == a.expect_seq, f"expected seq {a.expect_seq}"
                else:
                    ok = isinstance(r, int) and 1 <= r <= a.max_seq
                    what = f"expected seq 1..{a.max_seq}"
                if isinstance(r, int):
                    seqs[r] = seqs.get(r, 0) + 1
                if not ok:
                    problems.append(f"sector {s} (offset {s * SECTOR}): "
                                    f"{r if isinstance(r, str) else f'seq {r}'}, {what}")
            index += len(chunk) // SECTOR
    if expect is not None and len(expect) != index:
        problems.append(f"{index} sectors, the map has {len(expect)}")
    print(json.dumps({"sectors": index, "distinct_seqs": len(seqs), "problems": len(problems),
                      "first": problems[:10]}))
    sys.exit(1 if problems or index == 0 else 0)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("fill")
    f.add_argument("uri")
    f.add_argument("--seq", type=int, default=1)
    w = sub.add_parser("write-random")
    w.add_argument("uri")
    w.add_argument("stop_file")
    w.add_argument("map_out")
    w.add_argument("--fill-seq", type=int, default=1)
    w.add_argument("--threads", type=int, default=4)
    w.add_argument("--seed", type=int, default=1)
    w.add_argument("--max-seconds", type=float, default=60)
    v = sub.add_parser("verify")
    v.add_argument("file")
    g = v.add_mutually_exclusive_group(required=True)
    g.add_argument("--expect-seq", type=int)
    g.add_argument("--max-seq", type=int)
    g.add_argument("--expect-map")
    a = p.parse_args()
    {"fill": fill, "write-random": write_random, "verify": verify}[a.mode](a)


if __name__ == "__main__":
    main()
