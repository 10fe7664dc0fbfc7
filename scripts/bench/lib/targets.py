"""The end of every benchmark report: the Targets list, printed and appended to the report
file, and a marker file when a target failed (the wrappers' BENCH_STRICT reads it)."""


def finish(out, checks, path, fail_file):
    """Appends the Targets section to the lines `out`, prints them, appends them to `path`
    (if given) and creates `fail_file` (if given) when a check says [FAIL]."""
    if checks:
        out.append("### Targets\n")
        out.extend(checks)
        out.append("")
    text = "\n".join(out)
    print(text)
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")
    if fail_file and any("[FAIL]" in c for c in checks):
        open(fail_file, "w").close()
