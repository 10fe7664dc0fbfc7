#!/usr/bin/python3
"""Writers that overwrite a whole NBD export hard while cowd backs it up, each keeping an exact
model of what the device must hold afterwards (invariant 2 of DESIGN.md).

Usage: /usr/bin/python3 overwrite.py URI INITIAL MODEL_OUT STOP_FILE [--threads N] [--seed S]
                                     [--max-seconds S] [--go-file GO]

  INITIAL    a file with the device's content before the writers start (a copy of the image)
  MODEL_OUT  written at the end: the content the device must now have, byte for byte
  STOP_FILE  the writers stop when this file exists (or after --max-seconds)
  GO         with --go-file, the writers connect, print "ready", then wait for this file to
             exist before the first request (so a test can start them before a backup and let
             them write the moment the backup has started, without their start-up in between)

The device is cut into one region per thread at odd, unaligned offsets (so neighbouring writers
share a 64 KiB block); each thread has its own libnbd handle and is the only one to touch its
region, so its model is exact whatever the interleaving. Each thread loops over: writes of 1 byte
to 256 KiB at random offsets, a third of them placed exactly on, across or just beside a 64 KiB
block edge, some with FUA; WRITE_ZEROES (with and without NO_HOLE); TRIM (a hint in cowd: right
after it the thread reads the range back, checks that each 4 KiB piece holds either its old bytes
or zeroes, and takes what it read into the model); FLUSH; reads compared with the model.

Prints "ready" once every handle is connected, then, at the end (after a FLUSH on every handle),
one JSON line with the counts: ops per kind, bytes written, "errors" (failed requests) and
"mismatches" (reads that differ from the model, trims that produced something else than old data
or zeroes). Exits 1 if either is non-zero.
"""

import argparse
import json
import os
import random
import sys
import threading
import time

import nbd

KiB = 1 << 10
BLOCK = 64 * KiB


class Writer(threading.Thread):
    def __init__(self, uri, start, end, model, seed, stop_file, deadline):
        super().__init__(daemon=True)
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.start_off, self.end_off = start, end
        self.model = model  # bytearray of end - start bytes
        self.rng = random.Random(seed)
        self.stop_file = stop_file
        self.deadline = deadline
        self.can_trim = self.h.can_trim()
        self.can_fua = self.h.can_fua()
        self.counts = {"write": 0, "zero": 0, "trim": 0, "flush": 0, "read": 0}
        self.bytes = 0
        self.errors = []
        self.mismatches = []

    # -- choosing ranges ------------------------------------------------------------------

    def length(self):
        r = self.rng.random()
        if r < 0.2:
            return self.rng.randint(1, 512)
        if r < 0.5:
            return self.rng.randint(513, 8 * KiB)
        return self.rng.randint(8 * KiB + 1, 256 * KiB)

    def range(self, n):
        """A range of about n bytes inside the region: anywhere, or on/across/beside an edge."""
        size = self.end_off - self.start_off
        n = max(1, min(n, size))
        r = self.rng.random()
        if r < 0.35:
            # Near a 64 KiB block edge: starting on it, ending on it, crossing it, or just beside.
            first_edge = -(-self.start_off // BLOCK) * BLOCK
            last_edge = (self.end_off // BLOCK) * BLOCK
            if first_edge <= last_edge:
                edge = self.rng.randrange(first_edge, last_edge + 1, BLOCK)
                kind = self.rng.randrange(5)
                if kind == 0:
                    off = edge  # starts exactly on the edge
                elif kind == 1:
                    off = edge - n  # ends exactly on the edge
                elif kind == 2:
                    off = edge - self.rng.randint(1, n)  # crosses the edge
                elif kind == 3:
                    off = edge + self.rng.randint(1, 17)  # starts just after it
                else:
                    off = edge - n - self.rng.randint(1, 17)  # ends just before it
                off = min(max(off, self.start_off), self.end_off - n)
                return off, n
        return self.rng.randint(self.start_off, self.end_off - n), n

    # -- operations -----------------------------------------------------------------------

    def put(self, off, data):
        a = off - self.start_off
        self.model[a:a + len(data)] = data

    def op_write(self):
        off, n = self.range(self.length())
        data = self.rng.randbytes(n)
        flags = nbd.CMD_FLAG_FUA if self.can_fua and self.rng.random() < 0.1 else 0
        self.h.pwrite(data, off, flags)
        self.put(off, data)
        self.counts["write"] += 1
        self.bytes += n

    def op_zero(self):
        off, n = self.range(self.length())
        flags = nbd.CMD_FLAG_NO_HOLE if self.rng.random() < 0.5 else 0
        self.h.zero(n, off, flags)
        self.put(off, bytes(n))
        self.counts["zero"] += 1

    def op_trim(self):
        off, n = self.range(self.rng.randint(4 * KiB, 512 * KiB))
        self.h.trim(n, off)
        got = self.h.pread(n, off)
        a = off - self.start_off
        old = self.model[a:a + n]
        # Check per piece of 4 KiB page: either untouched or zeroes.
        at = off
        while at < off + n:
            end = min(off + n, (at // (4 * KiB) + 1) * 4 * KiB)
            g = got[at - off:end - off]
            if g != old[at - off:end - off] and g.count(0) != len(g):
                self.mismatches.append(
                    f"after TRIM {off}+{n}: bytes {at}..{end} are neither the old data nor zeroes"
                )
                break
            at = end
        self.put(off, got)
        self.counts["trim"] += 1

    def op_read(self):
        off, n = self.range(self.length())
        got = self.h.pread(n, off)
        a = off - self.start_off
        if got != self.model[a:a + n]:
            i = next(i for i in range(n) if got[i] != self.model[a + i])
            self.mismatches.append(f"read {off}+{n} differs from the model at byte {off + i}")
        self.counts["read"] += 1

    def op_flush(self):
        self.h.flush()
        self.counts["flush"] += 1

    def run(self):
        ops = [self.op_write] * 11 + [self.op_zero] * 3 + [self.op_read] * 2 + [self.op_flush]
        if self.can_trim:
            ops += [self.op_trim] * 3
        i = 0
        try:
            while True:
                i += 1
                if i % 8 == 0 and (os.path.exists(self.stop_file) or time.time() > self.deadline):
                    break
                self.rng.choice(ops)()
                if len(self.mismatches) > 20:
                    break
            self.h.flush()
        except nbd.Error as e:
            self.errors.append(f"{e} (errno {e.errno})")
        finally:
            self.h.shutdown()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("uri")
    p.add_argument("initial")
    p.add_argument("model_out")
    p.add_argument("stop_file")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=60)
    p.add_argument("--go-file")
    a = p.parse_args()

    with open(a.initial, "rb") as f:
        initial = f.read()
    size = len(initial)
    # Region edges at odd offsets, so that two writers share the 64 KiB block around each edge.
    edges = [0] + [size * t // a.threads + 12345 + 7 * t for t in range(1, a.threads)] + [size]
    deadline = time.time() + a.max_seconds
    writers = [
        Writer(a.uri, edges[t], edges[t + 1], bytearray(initial[edges[t]:edges[t + 1]]),
               a.seed * 1000 + t, a.stop_file, deadline)
        for t in range(a.threads)
    ]
    del initial
    print("ready", flush=True)
    while a.go_file and not os.path.exists(a.go_file):
        if time.time() > deadline:
            sys.exit("overwrite.py: the go file never appeared")
        time.sleep(0.002)
    started = time.time()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    elapsed = time.time() - started
    with open(a.model_out, "wb") as f:
        for w in writers:
            f.write(w.model)
    counts = {k: sum(w.counts[k] for w in writers) for k in writers[0].counts}
    errors = [e for w in writers for e in w.errors]
    mismatches = [m for w in writers for m in w.mismatches]
    print(json.dumps({
        "seconds": round(elapsed, 2),
        "ops": counts,
        "bytes_written": sum(w.bytes for w in writers),
        "errors": errors,
        "mismatches": mismatches[:20],
    }), flush=True)
    sys.exit(1 if errors or mismatches else 0)


if __name__ == "__main__":
    main()
