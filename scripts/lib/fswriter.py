#!/usr/bin/python3
"""A filesystem writer for cowd's demo and tests: keeps creating and rewriting files until
told to stop, and logs when each file became visible, so that a backup taken at a frozen
instant T can be checked file by file.

Every file is self-checking: its first 64 bytes are the hex SHA-256 of the rest.
Files are written under a temporary name and renamed into place (so a file either exists
whole or not at all). The log (outside the filesystem) has one line per rename:
    NAME SHA256 START END        (wall-clock seconds around the rename call)

usage: fswriter.py DIR LOG STOPFILE [MAX_FILES]
"""
import hashlib
import os
import random
import sys
import time


def body(rng: random.Random) -> bytes:
    data = rng.randbytes(rng.randint(1, 256) * 1024)
    return hashlib.sha256(data).hexdigest().encode() + data


def main() -> int:
    root, log_path, stop = sys.argv[1], sys.argv[2], sys.argv[3]
    limit = int(sys.argv[4]) if len(sys.argv) > 4 else 5000
    rng = random.Random(int(time.time()))
    os.makedirs(root, exist_ok=True)
    n = 0
    with open(log_path, "a", buffering=1) as log:
        while not os.path.exists(stop):
            # Mostly new files; sometimes replace an older one (a rewrite is a new version).
            name = f"f{n:06d}" if n < 8 or rng.random() < 0.8 or n >= limit else f"f{rng.randrange(n):06d}"
            tmp = os.path.join(root, f".tmp.{name}")
            content = body(rng)
            with open(tmp, "wb") as f:
                f.write(content)
            start = time.time()
            os.rename(tmp, os.path.join(root, name))
            end = time.time()
            log.write(f"{name} {content[:64].decode()} {start:.6f} {end:.6f}\n")
            n += 1
            time.sleep(0.002)
    return 0


if __name__ == "__main__":
    sys.exit(main())
