#!/usr/bin/python3
"""Checks a backup of a filesystem written by fswriter.py against the freeze window.

usage: fscheck.py MOUNTED_BACKUP_DIR LOG FROZEN_AT THAWED_AT   (times: RFC 3339 or seconds)

For every file name the writer used, the version the backup must hold is the last one whose
rename ended before the filesystem was frozen; a rename that overlaps the frozen window may
or may not be in (either is right); a rename that started after the thaw must not be.
Every file in the backup must also be whole (its SHA-256 header matches its content).
Prints a summary; exits 1 on any mismatch.
"""
import datetime
import hashlib
import os
import sys


def seconds(t: str) -> float:
    try:
        return float(t)
    except ValueError:
        return datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def main() -> int:
    root, log_path = sys.argv[1], sys.argv[2]
    frozen, thawed = seconds(sys.argv[3]), seconds(sys.argv[4])
    versions = {}
    with open(log_path) as log:
        for line in log:
            name, sha, start, end = line.split()
            versions.setdefault(name, []).append((float(start), float(end), sha))
    present = {n for n in os.listdir(root) if not n.startswith(".tmp.") and n != "lost+found"}
    bad, checked = [], 0
    for name, vs in sorted(versions.items()):
        done = [v for v in vs if v[1] < frozen]
        maybe = [v for v in vs if v[1] >= frozen and v[0] <= thawed]
        allowed = {v[2] for v in maybe} | ({done[-1][2]} if done else set())
        if name not in present:
            if done:
                bad.append(f"{name}: renamed before the freeze but missing from the backup")
            continue
        with open(os.path.join(root, name), "rb") as f:
            data = f.read()
        sha = data[:64].decode(errors="replace")
        checked += 1
        if hashlib.sha256(data[64:]).hexdigest() != sha:
            bad.append(f"{name}: torn or corrupt")
        elif sha not in allowed:
            bad.append(f"{name}: holds a version that is not the one at the snapshot point")
    for n in sorted(present - set(versions)):
        bad.append(f"{n}: unknown file in the backup")
    at_t = sum(1 for vs in versions.values() if any(v[1] < frozen for v in vs))
    later = sum(1 for vs in versions.values() if all(v[0] > thawed for v in vs))
    print(f"backup holds {len(present)} files ({checked} checked whole and at their version at T); "
          f"{at_t} existed before the freeze, {later} were created only after the thaw and are "
          f"absent as they must be; {len(bad)} problems")
    for b in bad[:20]:
        print("  " + b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
