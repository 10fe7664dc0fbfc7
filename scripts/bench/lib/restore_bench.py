#!/usr/bin/python3
"""Helpers for scripts/bench/restore.

Subcommands:
  add RESULTS KEY=VALUE...       append one JSON line to RESULTS (values that parse as JSON,
                                 e.g. numbers, are stored as such; the rest as strings)
  info FILE KEY VALUE            set KEY of the JSON object in FILE (VALUE as in `add`)
  verify FILE WHAT 0|1           append a check to the "verify" list of the JSON object in FILE
  gen --info F --name N --backups JSON --id ID
                                 record backup ID's facts (from `cowctl --json backups`) as
                                 gens[N] in F
  fio JSON                       print "p50_us p99_us p999_us mean_us iops total_ios" of the read
                                 side of the job in a fio JSON file
  wait-live --ctl SOCK --export NAME [--timeout S]
                                 poll the control API (GET /v1/restores, every 20 ms) until the
                                 newest restore serving export NAME is no longer running; print
                                 its status as JSON with "t_done" (time.time() when first seen
                                 done); fail if it failed or the timeout passed
  restore-status --ctl SOCK --export NAME
                                 print the status of the newest restore serving export NAME
  datablocks IMAGE --chunk-size N --out FILE
                                 for every chunk of IMAGE holding non-zero data, a line with the
                                 offsets of up to 8 of its non-zero 4 KiB blocks; prints the count
  firstreads URI --datablocks FILE [--seed S]
                                 read one of those blocks of every such chunk (random order, QD1,
                                 libnbd); print the latencies (µs) as JSON; fail if one reads as
                                 zeroes
  files ROOT                     create the tree of figure 4's generation under ROOT
  report RESULTS --info INFO --out OUT [--fail-file F]
                                 the markdown report (appended to OUT) and the Targets list
"""

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import sys
import time

import targets  # scripts/bench/lib/targets.py, next to this file

MIB = 1 << 20


# ---------------------------------------------------------------------------------------------
# Small things


def value(s):
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        return s


def add(args):
    obj = {}
    for kv in args.kv:
        k, sep, v = kv.partition("=")
        if not sep:
            raise SystemExit(f"add: {kv!r} is not KEY=VALUE")
        obj[k] = value(v)
    with open(args.results, "a") as f:
        f.write(json.dumps(obj) + "\n")


def info(args):
    d = {}
    if os.path.exists(args.file):
        with open(args.file) as f:
            d = json.load(f)
    d[args.key] = value(args.value)
    tmp = args.file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(d, f, indent=1)
    os.replace(tmp, args.file)


def verify(args):
    d = json.load(open(args.file)) if os.path.exists(args.file) else {}
    d.setdefault("verify", []).append({"what": args.what, "ok": args.ok == "1"})
    with open(args.file + ".tmp", "w") as f:
        json.dump(d, f, indent=1)
    os.replace(args.file + ".tmp", args.file)


def gen(args):
    """Records the facts of backup ID (from `cowctl --json backups` in BACKUPS) as gens[NAME]."""
    ms = [m for m in json.load(open(args.backups)) if m["id"] == args.id]
    if not ms:
        raise SystemExit(f"gen: no backup {args.id} in {args.backups}")
    m = ms[0]
    if m.get("status") != "complete":
        raise SystemExit(f"gen: backup {args.id} is {m.get('status')}")
    c = m["counts"]
    d = json.load(open(args.info)) if os.path.exists(args.info) else {}
    d.setdefault("gens", {})[args.name] = {
        "id": m["id"], "device_size": m["device_size"], "chunk_size": m["chunk_size"],
        "stored": c["bytes_new_stored"], "bytes_read": c["bytes_read"],
        "chunks_total": c["chunks_total"], "nonzero_chunks": c["chunks_total"] - c["chunks_zero"],
        "blocks": m.get("blocks"), "filesystem": m.get("filesystem"),
    }
    d["chunk_size"] = m["chunk_size"]
    with open(args.info + ".tmp", "w") as f:
        json.dump(d, f, indent=1)
    os.replace(args.info + ".tmp", args.info)
    print(json.dumps(d["gens"][args.name]))


def fio(args):
    text = open(args.json, encoding="utf-8", errors="replace").read()
    # fio's nbd engine may print a line before the JSON.
    start = text.find("{")
    if start < 0:
        raise SystemExit(f"{args.json}: no JSON in fio's output")
    job = json.loads(text[start:])["jobs"][0]
    if job.get("error"):
        raise SystemExit(f"{args.json}: fio job error {job['error']}")
    r = job["read"]
    if not r.get("total_ios"):
        raise SystemExit(f"{args.json}: fio did no reads")
    c = r["clat_ns"]
    pct = c.get("percentile", {})
    p = lambda k: pct.get(k, 0) / 1000  # noqa: E731
    print(f"{p('50.000000'):.1f} {p('99.000000'):.1f} {p('99.900000'):.1f} "
          f"{c['mean'] / 1000:.1f} {r['iops']:.1f} {r['total_ios']}")


# ---------------------------------------------------------------------------------------------
# The control API over a unix socket


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def api(ctl, method, path):
    c = UnixHTTP(ctl)
    try:
        c.request(method, path)
        r = c.getresponse()
        text = r.read().decode("utf-8", "replace")
    finally:
        c.close()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: HTTP {r.status}: {text}")
    return json.loads(text)


def live_status(ctl, export):
    # Newest first: the first one serving this export is the latest.
    for r in api(ctl, "GET", "/v1/restores"):
        if r.get("live") and r.get("export") == export:
            return r
    raise SystemExit(f"no live restore serving export {export!r}")


def wait_live(args):
    deadline = time.time() + args.timeout
    while True:
        r = live_status(args.ctl, args.export)
        now = time.time()
        if r["state"] != "running":
            break
        if now > deadline:
            raise SystemExit(f"live restore of export {args.export} still running after "
                             f"{args.timeout:.0f} s: {json.dumps(r)}")
        time.sleep(0.02)
    if r["state"] != "done":
        raise SystemExit(f"live restore of export {args.export} ended {r['state']}: "
                         f"{r.get('reason')}")
    r["t_done"] = now
    print(json.dumps(r))


def restore_status(args):
    print(json.dumps(live_status(args.ctl, args.export)))


# ---------------------------------------------------------------------------------------------
# Figure 2's first read of each chunk


def datablocks(args):
    """One line per chunk of IMAGE holding non-zero data: the offsets of up to 8 of its 4 KiB
    blocks that hold non-zero data (spread over the chunk)."""
    zero = bytes(4096)
    cs = args.chunk_size
    n = 0
    with open(args.image, "rb", buffering=0) as f, open(args.out, "w") as out:
        off = 0
        while True:
            data = f.read(cs)
            if not data:
                break
            blocks = [off + b for b in range(0, len(data), 4096) if data[b:b + 4096] != zero]
            if blocks:
                step = max(1, len(blocks) // 8)
                out.write(" ".join(str(b) for b in blocks[::step][:8]) + "\n")
                n += 1
            off += len(data)
    print(n)


def firstreads(args):
    """Reads one 4 KiB block holding data in each such chunk (DATABLOCKS), the chunks in a
    seeded random order, one request at a time; prints the latencies' summary as JSON."""
    import nbd  # python3-libnbd

    rng = random.Random(args.seed)
    chunks = [[int(x) for x in line.split()] for line in open(args.datablocks) if line.strip()]
    rng.shuffle(chunks)
    offs = [rng.choice(c) for c in chunks]
    h = nbd.NBD()
    h.connect_uri(args.uri)
    lat = []
    zero = bytes(4096)
    zeros = 0
    t_start = time.perf_counter_ns()
    for off in offs:
        t0 = time.perf_counter_ns()
        data = h.pread(4096, off)
        lat.append((time.perf_counter_ns() - t0) / 1000)
        if data == zero:
            zeros += 1
    wall = (time.perf_counter_ns() - t_start) / 1e9
    h.shutdown()
    if zeros:
        raise SystemExit(f"firstreads: {zeros} of {len(offs)} blocks that hold data read as zeroes")
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]  # noqa: E731
    print(json.dumps({"reads": len(lat), "p50": q(0.50), "p99": q(0.99), "max": lat[-1],
                      "mean": sum(lat) / len(lat), "wall_s": wall}))


# ---------------------------------------------------------------------------------------------
# Figure 4's tree: a few directories of files, sizes 1 KiB..1 MiB, and a few larger files.


def files(args):
    rng = random.Random(args.seed)
    n = 0
    total = 0
    for d in range(1, args.dirs + 1):
        dd = os.path.join(args.root, "data", f"d{d:02d}")
        os.makedirs(dd)
        for i in range(args.files):
            size = rng.choice([1024, 4096, 65536, 300000, MIB])
            with open(os.path.join(dd, f"file{i:04d}.dat"), "wb") as f:
                f.write(os.urandom(size))
            n += 1
            total += size
    big = os.path.join(args.root, "big")
    os.makedirs(big)
    for i in range(4):
        with open(os.path.join(big, f"big{i}.bin"), "wb") as f:
            for _ in range(16):
                f.write(os.urandom(MIB))
        n += 1
        total += 16 * MIB
    print(json.dumps({"files": n, "bytes": total}))


# ---------------------------------------------------------------------------------------------
# Report


def mib(x):
    return x / MIB


def size_name(m):
    return f"{m // 1024} GiB" if m % 1024 == 0 and m >= 1024 else f"{m} MiB"


def med(xs):
    return statistics.median(xs) if xs else None


def rng_s(xs, f="{:.2f}"):
    if not xs:
        return "–"
    if len(xs) == 1:
        return f.format(xs[0])
    return f"{f.format(med(xs))} ({f.format(min(xs))}–{f.format(max(xs))})"


def report(args):
    rows = [json.loads(line) for line in open(args.results) if line.strip()]
    inf = json.load(open(args.info))
    out = []
    checks = []
    trials = inf["trials"]
    multi = "; with several trials: median (min–max)" if trials > 1 else ""

    def fig(n):
        return [r for r in rows if r.get("fig") == n]

    # ----- Figure 1
    f1 = fig(1)
    small, large = inf["small_mib"], inf["large_mib"]
    out.append(f"### 1. `cowctl restore --live` to a mounted filesystem ({size_name(small)} and "
               f"{size_name(large)} generations)\n")
    out.append("Stages, each from the end of the one before: `cowctl restore ID --live --export "
               "NAME --to PATH` returns (export served), `nbdfuse DIR URI` shows DIR/nbd, "
               "`losetup -f --show DIR/nbd`, `mount` "
               f"(`-o {inf['mount_opts']}`), first `ls -l` of the root and of a directory of "
               "1 MiB..16 MiB files returns. Page cache dropped before each. Filler: "
               "*default* = unthrottled (it may restore chunks before the mount asks for them); "
               f"*throttled* = `--max-rate {inf['max_rate']}` (the mount's reads fetch their "
               f"chunks){multi}.\n")
    stages = [("served_s", "restore --live returns"), ("fuse_s", "nbdfuse up"),
              ("loop_s", "losetup"), ("mount_s", "mount"), ("ls_s", "first ls"),
              ("total_s", "**total**")]
    out.append("| generation | filler | " + " | ".join(s[1] for s in stages) +
               " | chunks fetched on demand |")
    out.append("|---|---|" + "---:|" * (len(stages) + 1))
    tot = {}
    for mode in ("default", "throttled"):
        for g, m in (("small", small), ("large", large)):
            rs = [r for r in f1 if r["gen"] == g and r.get("mode", "default") == mode]
            if not rs:
                continue
            cells = [rng_s([r[k] * 1000 for r in rs], "{:.0f}") + " ms" for k, _ in stages]
            tot[(g, mode)] = med([r["total_s"] for r in rs])
            od = rng_s([r["on_demand"] for r in rs], "{:.0f}")
            gi = inf["gens"][g]
            out.append(f"| {size_name(m)} ({mib(gi['stored']):.0f} MiB stored, "
                       f"{gi['nonzero_chunks']} non-zero chunks) | {mode} | " + " | ".join(cells) +
                       f" | {od} |")
    out.append("")
    lines = []
    for mode in ("default", "throttled"):
        a, b = tot.get(("large", mode)), tot.get(("small", mode))
        if a is None or b is None:
            continue
        r = a / b
        lines.append(f"| {size_name(large)}, {mode}: {a * 1000:.0f} ms | {size_name(small)}, "
                     f"{mode}: {b * 1000:.0f} ms | {r:.2f}× | ≤ 2× (growing with the device "
                     f"would be {large // small}×) |")
        checks.append(f"- [{'PASS' if r <= 2 else 'FAIL'}] live restore to a mounted filesystem, "
                      f"{mode} filler: {size_name(large)} {a * 1000:.0f} ms vs {size_name(small)} "
                      f"{b * 1000:.0f} ms = {r:.2f}× (target ≤ 2×: does not grow with the device)")
    if lines:
        out.append("| measured | anchor | ratio | target |\n|---|---|---:|---|")
        out.extend(lines)
        out.append("")

    # ----- Figure 2
    f2 = fig(2)
    out.append(f"### 2. Cold 4 KiB random reads, QD1, on a live-restoring export vs the same "
               f"generation fully restored ({size_name(small)} generation)\n")
    out.append(f"`fio --ioengine=nbd --rw=randread --bs=4k --iodepth=1 --runtime="
               f"{inf['runtime']}` over the whole export, page cache dropped first. Live: "
               f"`cowctl restore --live --max-rate {inf['max_rate']}` started right before fio, "
               "so every non-zero chunk starts unrestored and a read of one fetches its chunk "
               f"({inf['chunk_size'] // MIB} MiB, digest checked) first. Anchor: the export of "
               "figure 3's live restore after it completed (served from the destination alone)"
               f"{multi}.\n")
    live = [r for r in f2 if r["what"] == "live"]
    done = [r for r in f2 if r["what"] == "restored"]
    out.append("| export | p50 | p99 | p99.9 | mean | IOPS | reads | chunks fetched by reads "
               "| filler during the run |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, rs in (("live restore running", live), ("restore completed (anchor)", done)):
        if not rs:
            continue
        c = [rng_s([r[k] for r in rs], "{:,.0f}") + " µs" for k in ("p50", "p99", "p999", "mean")]
        c.append(rng_s([r["iops"] for r in rs], "{:,.0f}"))
        c.append(rng_s([r["ios"] for r in rs], "{:,.0f}"))
        if "on_demand" in rs[0]:
            c.append(rng_s([r["on_demand"] for r in rs], "{:.0f}") +
                     f" of {rs[0]['nonzero_chunks']}")
            c.append(rng_s([r["filler_mib_s"] for r in rs], "{:.1f}") + " MiB/s")
        else:
            c += ["–", "–"]
        out.append(f"| {name} | " + " | ".join(c) + " |")
    out.append("")
    if live and done:
        p50 = med([r["p50"] for r in live]) / med([r["p50"] for r in done])
        p99 = med([r["p99"] for r in live]) / med([r["p99"] for r in done])
        out.append("| measured | anchor | ratio | target |\n|---|---|---:|---|")
        out.append(f"| p50 live {med([r['p50'] for r in live]):,.0f} µs | p50 restored "
                   f"{med([r['p50'] for r in done]):,.0f} µs | {p50:.2f}× | none (reported) |")
        out.append(f"| p99 live {med([r['p99'] for r in live]):,.0f} µs | p99 restored "
                   f"{med([r['p99'] for r in done]):,.0f} µs | {p99:.2f}× | none (reported) |\n")
        eff = med([r["filler_mib_s"] for r in live])
        if eff > 2 * inf["max_rate"]:
            out.append(f"Note: the filler restored {eff:.1f} MiB/s during the run although "
                       f"`--max-rate {inf['max_rate']}` asked for {inf['max_rate']} MiB/s (each "
                       "filler worker restores one chunk at once, then paces: a short run shows "
                       "that start).\n")
        checks.append(f"- [info] cold 4 KiB QD1 reads while live-restoring (fio, "
                      f"{inf['runtime']} s): p50 {p50:.2f}×, p99 {p99:.2f}× those of the "
                      "restored export (no target)")
    fl = [r["r"] for r in f2 if r["what"] == "first-live"]
    fr = [r["r"] for r in f2 if r["what"] == "first-restored"]
    fs = [r["r"] for r in f2 if r["what"] == "first-live-status"]
    ff = [r["r"] for r in f2 if r["what"] == "first-live-full"]
    ffs = [r["r"] for r in f2 if r["what"] == "first-live-full-status"]
    if fl or fr:
        out.append("**The first read of each chunk.** Over a run of fio most reads land in "
                   "chunks already fetched (a fetched chunk is also in the page cache), so the "
                   "fetch shows only in the tail. Here instead one 4 KiB block holding data is "
                   "read in every chunk holding data, the chunks in random order, one request "
                   "at a time (python3-libnbd, so ~10 µs of client overhead on both sides); on "
                   "the live restore (started right before, same --max-rate) each such read "
                   "has to fetch its chunk. The third row is the same on a live restore whose "
                   "filler runs at full speed (no --max-rate): the filler races the reads "
                   "(fewer of them fetch), and client fetches go first (the filler starts no "
                   "chunk while one waits, and runs at a lower CPU priority).\n")
        out.append("| export | reads | p50 | p99 | max | mean | chunks fetched on demand |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for name, rs, st in (("live restore running", fl, fs),
                             ("live restore, filler at full speed", ff, ffs),
                             ("restore completed (anchor)", fr, [])):
            if not rs:
                continue
            c = [str(rs[0]["reads"])]
            c += [rng_s([r[k] for r in rs], "{:,.0f}") + " µs" for k in ("p50", "p99", "max", "mean")]
            c.append(rng_s([x["chunks_on_demand"] for x in st], "{:.0f}") if st else "–")
            out.append(f"| {name} | " + " | ".join(c) + " |")
        out.append("")
    if fl and fr:
        a50, b50 = med([r["p50"] for r in fl]), med([r["p50"] for r in fr])
        a99, b99 = med([r["p99"] for r in fl]), med([r["p99"] for r in fr])
        out.append("| measured | anchor | ratio | target |\n|---|---|---:|---|")
        out.append(f"| p50 first read, live {a50:,.0f} µs | restored {b50:,.0f} µs | "
                   f"{a50 / b50:.2f}× | none (reported) |")
        out.append(f"| p99 first read, live {a99:,.0f} µs | restored {b99:,.0f} µs | "
                   f"{a99 / b99:.2f}× | none (reported) |\n")
        checks.append(f"- [info] first cold 4 KiB read of each chunk while live-restoring: "
                      f"p50 {a50:,.0f} µs vs {b50:,.0f} µs restored = {a50 / b50:.2f}×, p99 "
                      f"{a99 / b99:.2f}× (the chunk fetch; no target)")
    if ff and fr:
        a50, a99 = med([r["p50"] for r in ff]), med([r["p99"] for r in ff])
        amax = med([r["max"] for r in ff])
        checks.append(f"- [info] the same with the filler at full speed: p50 {a50:,.0f} µs, "
                      f"p99 {a99:,.0f} µs, max {amax:,.0f} µs (no target)")

    # ----- Figure 3
    f3 = fig(3)
    out.append(f"### 3. Filler throughput: live restore without clients vs offline restore "
               f"({size_name(small)} generation)\n")
    out.append("Live: from the start of `cowctl restore ID --live --export NAME --to PATH` until "
               "`GET /v1/restores` (what `cowctl restores` shows) says done, polled every 20 ms; "
               "no client, no --max-rate. Offline: `cowctl restore ID --to PATH` (returns when "
               "done; includes the SHA-256 of the image written beside it, `PATH.sha256`). Page "
               "cache dropped before each; rates are MiB/s of non-zero data written "
               f"(`bytes_written`){multi}.\n")
    lv = [r for r in f3 if r["what"] == "live"]
    off = [r for r in f3 if r["what"] == "offline"]
    out.append("| restore | wall time | daemon's elapsed_s | data written | MiB/s (wall) |")
    out.append("|---|---:|---:|---:|---:|")
    for name, rs in (("live, no client", lv), ("offline (anchor)", off)):
        if rs:
            out.append(f"| {name} | {rng_s([r['wall_s'] for r in rs])} s | "
                       f"{rng_s([r['elapsed_s'] for r in rs])} s | "
                       f"{mib(rs[0]['bytes']):.0f} MiB | "
                       f"{rng_s([mib(r['bytes']) / r['wall_s'] for r in rs], '{:.0f}')} |")
    out.append("")
    if lv and off:
        a = med([mib(r["bytes"]) / r["wall_s"] for r in lv])
        b = med([mib(r["bytes"]) / r["wall_s"] for r in off])
        out.append("| measured | anchor | ratio | target |\n|---|---|---:|---|")
        out.append(f"| live {a:.0f} MiB/s | offline {b:.0f} MiB/s | {a / b:.2f}× | ≥ 0.8× |\n")
        checks.append(f"- [{'PASS' if a / b >= 0.8 else 'FAIL'}] live restore filler "
                      f"{a:.0f} MiB/s vs offline restore {b:.0f} MiB/s = {a / b:.2f}× "
                      f"(target ≥ 0.80)")

    # ----- Figure 4
    f4 = fig(4)
    lsm = inf["ls_mib"]
    out.append(f"### 4. `cowctl ls` on a {size_name(lsm)} generation\n")
    gi = inf["gens"].get("ls", {})
    out.append(f"`cowctl ls ID {inf['ls_dir']} -l` ({inf['ls_entries']} entries) on a sparse "
               f"{size_name(lsm)} ext4 image holding {inf.get('ls_tree', {}).get('files', '?')} "
               f"files ({mib(gi.get('stored', 0)):.0f} MiB stored), including the cowctl "
               "process. Cold: page cache dropped first; warm: right after, median of 5.\n")
    cold = [r["s"] for r in f4 if r["what"] == "cold"]
    warm = [r["s"] for r in f4 if r["what"] == "warm"]
    out.append("| measured | value | target |\n|---|---:|---|")
    if cold:
        out.append(f"| cold | {rng_s([x * 1000 for x in cold], '{:.0f}')} ms | < 1 s |")
    if warm:
        out.append(f"| warm | {med(warm) * 1000:.0f} ms | – |")
    if cold and warm:
        out.append(f"| cold / warm | {med(cold) / med(warm):.1f}× | – |")
    out.append("")
    if cold:
        c = med(cold)
        checks.append(f"- [{'PASS' if c < 1 else 'FAIL'}] cold `cowctl ls` on a "
                      f"{size_name(lsm)} generation: {c * 1000:.0f} ms (target < 1 s)")

    # ----- Figure 5
    f5 = fig(5)
    fm = inf["file_mib"]
    gi = inf["gens"].get("file", {})
    out.append(f"### 5. Extracting a {size_name(fm)} file vs an offline restore of its "
               "generation\n")
    out.append(f"The generation: a {size_name(inf['file_img_mib'])} ext4 image holding "
               f"/bigfile ({size_name(fm)} of random data) and little else "
               f"({mib(gi.get('stored', 0)):.0f} MiB stored, {gi.get('nonzero_chunks', '?')} "
               f"non-zero chunks). `cowctl restore ID --path /bigfile --to DIR` then `sync` of "
               "the file (the offline restore syncs its image before it returns, extraction "
               "does not), against `cowctl restore ID --to PATH`. Page cache dropped before "
               "each. **Rates compared: MiB/s of data written** — the file's bytes for the "
               "extraction, the non-zero chunks written (`bytes_written`) for the offline "
               "restore. Both then move the same kind of bytes (read, decompress, check, "
               "write); the device size would flatter the offline restore, whose holes cost "
               "nothing, and the stored bytes would ignore the work of decompression"
               f"{multi}.\n")
    ex = [r for r in f5 if r["what"] == "extract"]
    off = [r for r in f5 if r["what"] == "offline"]
    dd = [r for r in f5 if r["what"] == "disk"]
    out.append("| run | time | data | MiB/s |\n|---|---:|---:|---:|")
    if ex:
        out.append(f"| `restore --path /bigfile` + sync | {rng_s([r['wall_s'] for r in ex])} s | "
                   f"{mib(ex[0]['bytes']):.0f} MiB | "
                   f"{rng_s([mib(r['bytes']) / r['wall_s'] for r in ex], '{:.0f}')} |")
        out.append(f"| (without the sync) | {rng_s([r['nosync_s'] for r in ex])} s | "
                   f"{mib(ex[0]['bytes']):.0f} MiB | "
                   f"{rng_s([mib(r['bytes']) / r['nosync_s'] for r in ex], '{:.0f}')} |")
    if off:
        out.append(f"| offline restore (anchor) | {rng_s([r['wall_s'] for r in off])} s | "
                   f"{mib(off[0]['bytes']):.0f} MiB | "
                   f"{rng_s([mib(r['bytes']) / r['wall_s'] for r in off], '{:.0f}')} "
                   f"({rng_s([inf['file_img_mib'] / r['wall_s'] for r in off], '{:.0f}')} "
                   "of the device) |")
    if dd:
        out.append(f"| the disk: `dd` of the same bytes from tmpfs, `conv=fsync` | "
                   f"{rng_s([r['wall_s'] for r in dd])} s | {mib(dd[0]['bytes']):.0f} MiB | "
                   f"{rng_s([mib(r['bytes']) / r['wall_s'] for r in dd], '{:.0f}')} |")
    out.append("")
    if len(dd) > 1:
        w = [r["wall_s"] for r in dd]
        out.append(f"The disk alone varies {max(w) / min(w):.1f}× between trials (the `dd` row: "
                   "same bytes, same file system, page cache dropped first); one trial's ratio "
                   "is only as steady as the disk, which is why the medians of interleaved "
                   "trials are compared.\n")
    if ex and off:
        a = med([mib(r["bytes"]) / r["wall_s"] for r in ex])
        b = med([mib(r["bytes"]) / r["wall_s"] for r in off])
        out.append("| measured | anchor | ratio | target |\n|---|---|---:|---|")
        out.append(f"| extraction {a:.0f} MiB/s | offline restore {b:.0f} MiB/s | "
                   f"{a / b:.2f}× | ≥ 0.8× |\n")
        checks.append(f"- [{'PASS' if a / b >= 0.8 else 'FAIL'}] extraction of a "
                      f"{size_name(fm)} file {a:.0f} MiB/s vs offline restore {b:.0f} MiB/s of "
                      f"data = {a / b:.2f}× (target ≥ 0.80)")
    for v in inf.get("verify", []):
        checks.append(f"- [{'PASS' if v['ok'] else 'FAIL'}] {v['what']}")
    targets.finish(out, checks, args.out, args.fail_file)


# ---------------------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add")
    a.add_argument("results")
    a.add_argument("kv", nargs="+")
    a = sub.add_parser("info")
    a.add_argument("file")
    a.add_argument("key")
    a.add_argument("value")
    a = sub.add_parser("verify")
    a.add_argument("file")
    a.add_argument("what")
    a.add_argument("ok", choices=["0", "1"])
    a = sub.add_parser("gen")
    a.add_argument("--info", required=True)
    a.add_argument("--name", required=True)
    a.add_argument("--backups", required=True)
    a.add_argument("--id", required=True)
    a = sub.add_parser("fio")
    a.add_argument("json")
    a = sub.add_parser("wait-live")
    a.add_argument("--ctl", required=True)
    a.add_argument("--export", required=True)
    a.add_argument("--timeout", type=float, default=1800)
    a = sub.add_parser("restore-status")
    a.add_argument("--ctl", required=True)
    a.add_argument("--export", required=True)
    a = sub.add_parser("datablocks")
    a.add_argument("image")
    a.add_argument("--chunk-size", type=int, required=True)
    a.add_argument("--out", required=True)
    a = sub.add_parser("firstreads")
    a.add_argument("uri")
    a.add_argument("--datablocks", required=True)
    a.add_argument("--seed", type=int, default=1)
    a = sub.add_parser("files")
    a.add_argument("root")
    a.add_argument("--dirs", type=int, default=8)
    a.add_argument("--files", type=int, default=100)
    a.add_argument("--seed", type=int, default=1)
    a = sub.add_parser("report")
    a.add_argument("results")
    a.add_argument("--info", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--fail-file")
    args = p.parse_args()
    return {"add": add, "info": info, "verify": verify, "gen": gen, "fio": fio, "wait-live": wait_live,
            "restore-status": restore_status, "datablocks": datablocks,
            "firstreads": firstreads, "files": files, "report": report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
