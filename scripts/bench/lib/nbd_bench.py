#!/usr/bin/python3
"""Helpers for scripts/bench/nbd-vs-peers.

Subcommands:
  fio JSON                      print "iops mib_s p99_us total_ios fio_cpu_s" of the job in a fio
                                JSON file
  idle PID URI N HOLD           open N NBD connections to URI and read VmRSS of PID after they
                                idled HOLD seconds: fresh; after one small read/write per
                                connection; after a burst of 8 x 1 MiB reads and writes in flight
                                per connection; print "rss_idle rss_light rss_burst" (KiB)
                                (needs the libnbd python module: run with /usr/bin/python3)
  report RESULTS MEM OUT ...    turn the raw result lines into markdown tables (see main())
"""

import argparse
import json
import sys
import time

import targets  # scripts/bench/lib/targets.py, next to this file


# ---------------------------------------------------------------------------------------------
# fio JSON


def fio_summary(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    # fio's nbd engine prints "fio: connected to NBD server" before the JSON on some versions.
    start = text.find("{")
    if start < 0:
        raise SystemExit(f"{path}: no JSON in fio output")
    data = json.loads(text[start:])
    job = data["jobs"][0]
    if job.get("error"):
        raise SystemExit(f"{path}: fio job error {job['error']}")
    # The job does either reads or writes; take the direction that did the I/O.
    side = max(("read", "write"), key=lambda k: job[k].get("total_ios", 0))
    s = job[side]
    pct = s.get("clat_ns", {}).get("percentile", {})
    p99_ns = pct.get("99.000000", 0)
    # fio's own CPU time (its thread's usr+sys share of the job's runtime), to tell background
    # load apart from the client and the server.
    runtime_s = job.get("job_runtime", s.get("runtime", 0)) / 1000
    fio_cpu_s = (job.get("usr_cpu", 0) + job.get("sys_cpu", 0)) / 100 * runtime_s
    print(
        f"{s['iops']:.1f} {s['bw_bytes'] / 1048576:.1f} {p99_ns / 1000:.1f} {s['total_ios']} "
        f"{fio_cpu_s:.3f}"
    )


# ---------------------------------------------------------------------------------------------
# idle connections


def vm_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {field} for pid {pid}")


def idle(pid, uri, n, hold):
    import os

    import nbd  # python3-libnbd

    def drain(h):
        while h.aio_in_flight() > 0:
            h.poll(-1)

    handles = []
    for _ in range(n):
        h = nbd.NBD()
        h.connect_uri(uri)
        handles.append(h)
    size = handles[0].get_size()
    # Every connection works in its own 8 MiB slice of the export.
    slices = [(i * (8 << 20)) % max(size - (8 << 20), 1) // 4096 * 4096 for i in range(n)]
    time.sleep(hold)
    rss = [vm_status(pid, "VmRSS")]

    # Light: one 4 KiB read + rewrite of the same data, and one 1 MiB read, per connection.
    for h, off in zip(handles, slices):
        buf = h.pread(4096, off)
        h.pwrite(buf, off)
        h.pread(1 << 20, off + (1 << 20))
    time.sleep(hold)
    rss.append(vm_status(pid, "VmRSS"))

    # Burst: 8 x 1 MiB reads in flight, then 8 x 1 MiB writes (random data) in flight, per
    # connection; then every connection goes idle again.
    data = nbd.Buffer.from_bytearray(bytearray(os.urandom(1 << 20)))
    for h, off in zip(handles, slices):
        bufs = [nbd.Buffer(1 << 20) for _ in range(8)]
        for j, b in enumerate(bufs):
            h.aio_pread(b, off + (j << 20))
        drain(h)
        for j in range(8):
            h.aio_pwrite(data, off + (j << 20))
        drain(h)
    time.sleep(hold)
    rss.append(vm_status(pid, "VmRSS"))
    for h in handles:
        h.shutdown()
    print(" ".join(str(x) for x in rss))


# ---------------------------------------------------------------------------------------------
# report


def fmt_int(x):
    return f"{x:,.0f}"


def fmt_p99(us):
    if us >= 10000:
        return f"{us / 1000:,.1f} ms"
    return f"{us:,.0f} µs"


def fmt_ratio(r):
    return f"{r:.2f}×"


def report(args):
    # RESULTS lines: group server workload iops mib_s p99_us cpu_us_per_io hwm_kib total_ios
    # [other_cpu_pct]
    res = {}
    runs = {}
    other = {}
    for line in open(args.results):
        f = line.rstrip("\n").split("\t")
        if len(f) < 9:
            continue
        g, srv, wl = f[0], f[1], f[2]
        iops, mib, p99, cpu = (float(x) for x in f[3:7])
        row = dict(iops=iops, mib=mib, p99=p99, cpu=cpu, hwm=int(f[7]))
        runs.setdefault((g, srv, wl), []).append(row)
        if len(f) > 9 and f[9]:
            other.setdefault(g, []).append(float(f[9]))
    # With REPEAT > 1 each (group, server, workload) ran several times: keep the run with the
    # median throughput (lower median for an even count), and the spread as min..max.
    for k, rows in runs.items():
        rows.sort(key=lambda r: r["iops"])
        med = dict(rows[(len(rows) - 1) // 2])
        med["lo"], med["hi"], med["n"] = rows[0], rows[-1], len(rows)
        med["hwm"] = max(r["hwm"] for r in rows)
        res[k] = med

    # --workload key|label|metric (metric: iops or mib)
    workloads = [w.split("|") for w in args.workload]
    # --group name|title|srv:label[:ref],srv:label...   first server is cowd
    groups = []
    for g in args.group:
        name, title, servers = g.split("|", 2)
        srvs = []
        for s in servers.split(","):
            parts = s.split(":")
            srvs.append(dict(key=parts[0], label=parts[1], ref=len(parts) > 2 and parts[2] == "ref"))
        groups.append((name, title, srvs))

    out = []
    checks = []
    for name, title, srvs in groups:
        cowd, peers = srvs[0], srvs[1:]
        if not any((name, s["key"], w[0]) in res for s in srvs for w in workloads):
            continue
        out.append(f"### {title}\n")
        hdr = ["workload"]
        for s in srvs:
            hdr += [s["label"], "p99"]
        hdr += [f"cowd / {p['label']}" for p in peers]
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" + "---:|" * (len(hdr) - 1))
        for key, label, metric in workloads:
            row = [label]
            val = {}
            for s in srvs:
                r = res.get((name, s["key"], key))
                if r is None:
                    row += ["–", "–"]
                    continue
                v = r["iops"] if metric == "iops" else r["mib"]
                val[s["key"]] = v
                unit = "IOPS" if metric == "iops" else "MiB/s"
                cell = f"{fmt_int(v)} {unit}"
                if r["n"] > 1:
                    lo, hi = (x["iops"] if metric == "iops" else x["mib"] for x in (r["lo"], r["hi"]))
                    cell += f" ({fmt_int(lo)}–{fmt_int(hi)})"
                row += [cell, fmt_p99(r["p99"])]
            for p in peers:
                c, pv = val.get(cowd["key"]), val.get(p["key"])
                row.append(fmt_ratio(c / pv) if c and pv else "–")
            out.append("| " + " | ".join(row) + " |")
        out.append("")

        # CPU cost and memory high-water mark.
        out.append(f"Server CPU time (user+sys) per I/O, µs, and peak RSS during the run ({name}):\n")
        hdr = ["workload"] + [s["label"] for s in srvs]
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" + "---:|" * (len(hdr) - 1))
        hwm = {s["key"]: 0 for s in srvs}
        for key, label, metric in workloads:
            row = [label]
            for s in srvs:
                r = res.get((name, s["key"], key))
                if r is None:
                    row.append("–")
                    continue
                hwm[s["key"]] = max(hwm[s["key"]], r["hwm"])
                row.append(f"{r['cpu']:.1f}")
            out.append("| " + " | ".join(row) + " |")
        out.append(
            "| peak RSS (MiB) | "
            + " | ".join(f"{hwm[s['key']] / 1024:.1f}" if hwm[s["key"]] else "–" for s in srvs)
            + " |"
        )
        out.append("")
        if other.get(name):
            o = sorted(other[name])
            out.append(
                f"Background load (CPU used by other processes than the server and fio during the "
                f"runs, in % of one CPU; this machine has {args.cpus}): median {o[len(o) // 2]:.0f}%, "
                f"max {o[-1]:.0f}%.\n"
            )

        # Targets.
        def get(srv, wl, metric):
            r = res.get((name, srv, wl))
            if r is None:
                return None
            return r["iops"] if metric == "iops" else r["mib"]

        qemu = next((p for p in peers if p["key"].startswith("qemu")), None)
        for wl, label in (("rr4k32", "4k randread QD32"), ("rw4k32", "4k randwrite QD32")):
            c = get(cowd["key"], wl, "iops")
            q = get(qemu["key"], wl, "iops") if qemu else None
            if c and q:
                ok = c / q >= 1.2
                checks.append(
                    f"- [{'PASS' if ok else 'FAIL'}] {name}: {label}: cowd / {qemu['label']} = "
                    f"{c / q:.2f} (target ≥ 1.20)"
                )
        for wl, label in (("sr1m8", "1M seq read QD8"), ("sw1m8", "1M seq write QD8")):
            c = get(cowd["key"], wl, "mib")
            best = None
            for p in peers:
                if p["ref"]:
                    continue
                v = get(p["key"], wl, "mib")
                if v and (best is None or v > best[1]):
                    best = (p["label"], v)
            if c and best:
                ok = c / best[1] >= 0.95
                checks.append(
                    f"- [{'PASS' if ok else 'FAIL'}] {name}: {label}: cowd / best peer ({best[0]}) = "
                    f"{c / best[1]:.2f} (target ≥ 0.95)"
                )

    # Memory: MEM lines: server label rss_idle rss_light rss_burst (KiB)
    mem = []
    try:
        for line in open(args.mem):
            f = line.rstrip("\n").split("\t")
            if len(f) >= 5:
                mem.append((f[0], f[1], int(f[2]), int(f[3]), int(f[4])))
    except FileNotFoundError:
        pass
    if mem:
        n = args.conns
        out.append(f"### Memory: RSS with {n} idle NBD connections\n")
        out.append(
            "| server | connected, never used | idle after one 4 KiB read+write and one 1 MiB "
            "read each | idle after 8 × 1 MiB reads + 8 × 1 MiB writes in flight on each |"
        )
        out.append("|---|---:|---:|---:|")
        for key, label, a, b, c in mem:
            out.append(f"| {label} | {a / 1024:.1f} MiB | {b / 1024:.1f} MiB | {c / 1024:.1f} MiB |")
        out.append("")
        for key, label, a, b, c in mem:
            if not key.startswith("cowd"):
                continue
            idle_worst = max(a, b)
            checks.append(
                f"- [{'PASS' if idle_worst < 64 * 1024 else 'FAIL'}] memory: {label}: RSS with {n} "
                f"idle connections = {idle_worst / 1024:.1f} MiB (target < 64 MiB)"
            )
            checks.append(
                f"- [{'PASS' if c < 64 * 1024 else 'FAIL'}] memory: {label}: RSS with {n} "
                f"connections idle after a QD8 1 MiB burst each = {c / 1024:.1f} MiB "
                f"(same 64 MiB budget, stricter reading)"
            )

    targets.finish(out, checks, args.out, args.fail_file)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("fio")
    a.add_argument("json")
    a = sub.add_parser("idle")
    a.add_argument("pid", type=int)
    a.add_argument("uri")
    a.add_argument("n", type=int)
    a.add_argument("hold", type=float)
    a = sub.add_parser("report")
    a.add_argument("results")
    a.add_argument("mem")
    a.add_argument("--out")
    a.add_argument("--fail-file")
    a.add_argument("--conns", type=int, default=16)
    a.add_argument("--cpus", type=int, default=1)
    a.add_argument("--workload", action="append", default=[])
    a.add_argument("--group", action="append", default=[])
    args = p.parse_args()
    if args.cmd == "fio":
        fio_summary(args.json)
    elif args.cmd == "idle":
        idle(args.pid, args.uri, args.n, args.hold)
    else:
        report(args)


if __name__ == "__main__":
    sys.exit(main())
