"""`make bench`: run the benchmarks one after another, each on its own fresh stack.

python -m bench [pipeline economy scaleout gateway ...] [--quick]
--quick runs each at a small size (a smoke run of the instrument, not a figure to quote).
Results: bench/results/<bench>-latest.{json,md}; the README's table is rewritten after each.
"""
import argparse
import subprocess
import sys

from common.secrets import ROOT

BENCHES = ["pipeline", "economy", "scaleout", "gateway"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help=f"some of {BENCHES} (default: all)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHES)
    if unknown:
        parser.error(f"unknown bench: {', '.join(sorted(unknown))}")
    failed = []
    for name in args.names or BENCHES:
        print(f"== bench {name}", flush=True)
        cmd = [sys.executable, "-m", f"bench.{name}"] + (["--quick"] if args.quick else [])
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
