#!/usr/bin/python3
"""scripts/lib/fswriter.py at a gentler pace, for tests that keep it running for a while.

usage: paced_fswriter.py PAUSE_SECONDS DIR LOG STOPFILE [MAX_FILES]

Runs fswriter.py's own main() (same files, same log format, checked by fscheck.py), only with
a pause of PAUSE_SECONDS after each rename instead of its 2 ms: at full speed it writes tens of
MiB/s, which would fill a small filesystem within a few generations of backups.
"""
import importlib.util
import os
import sys
import time
import types


def main() -> int:
    pause = float(sys.argv[1])
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "..", "scripts", "lib", "fswriter.py")
    spec = importlib.util.spec_from_file_location("fswriter", path)
    writer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(writer)
    # fswriter uses time.time() and time.sleep(); only the sleep is stretched.
    writer.time = types.SimpleNamespace(
        time=time.time, sleep=lambda s: time.sleep(max(s, pause))
    )
    sys.argv = [path] + sys.argv[2:]
    return writer.main()


if __name__ == "__main__":
    sys.exit(main())
