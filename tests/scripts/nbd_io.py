#!/usr/bin/python3
"""Writes files into an NBD export in order, saying which requests were acknowledged.

Usage: /usr/bin/python3 nbd_io.py URI OP...

  write:OFFSET:FILE   NBD_CMD_WRITE of FILE's bytes at OFFSET
  fua:OFFSET:FILE     the same with NBD_CMD_FLAG_FUA
  flush               NBD_CMD_FLUSH

Prints "ack N" (N counts from 0) as soon as request N is acknowledged, flushed to stdout at
once, so a test that cuts the power meanwhile knows what the server had promised. Stops at the
first failed request ("failed N: ERROR", exit 1).
"""

import sys

import nbd


def main():
    uri, ops = sys.argv[1], sys.argv[2:]
    h = nbd.NBD()
    h.connect_uri(uri)
    for n, op in enumerate(ops):
        kind, *rest = op.split(":", 2)
        try:
            if kind == "flush":
                h.flush()
            else:
                offset, path = int(rest[0]), rest[1]
                with open(path, "rb") as f:
                    data = f.read()
                flags = nbd.CMD_FLAG_FUA if kind == "fua" else 0
                h.pwrite(data, offset, flags)
        except nbd.Error as e:
            print(f"failed {n}: {e}", flush=True)
            sys.exit(1)
        print(f"ack {n}", flush=True)
    h.shutdown()


if __name__ == "__main__":
    main()
