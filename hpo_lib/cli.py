"""The ``hpo`` command. Thin: parse, call hpo_lib, print. Bad input ends as one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from hpo_lib.errors import HpoError

DESCRIPTION = """\
Tune deep-learning forecasters for financial time series with Katib, or on one machine.

commands:
  trial         train one model; prints Katib metrics lines (what every Katib trial pod runs)
  data fetch    download market data once into the Parquet cache (what the cluster's data-prep Job runs)

Run `hpo COMMAND --help` for the options of a command.
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpo", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and retries")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    commands.add_parser("trial", help="train one model (run `hpo trial --help` for its flags)", add_help=False)

    data_parser = commands.add_parser("data", help="market data")
    data_commands = data_parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    fetch = data_commands.add_parser(
        "fetch", help="download once into the cache",
        description="Download market data once and cache it as Parquet, so trials never call Yahoo again. "
                    "Example: hpo data fetch 'yahoo:SPY,QQQ?start=2010-01-01&end=2024-12-31' --cache-dir /data")
    fetch.add_argument("spec", help="data spec: yahoo:T1,T2?start=..&end=..&interval=1d, sample:NAME or file:PATH")
    fetch.add_argument("--cache-dir", default=None, help="cache folder (default $HPO_CACHE_DIR or ~/.cache/katib-hpo)")
    fetch.add_argument("--refresh", action="store_true", help="download again even when the cache has the request")
    return parser


def _data_fetch(args: argparse.Namespace) -> int:
    from hpo_lib import data

    path, prices = data.fetch(args.spec, cache_dir=args.cache_dir, refresh=args.refresh)
    for ticker, frame in prices.items():
        print(f"{ticker}: {len(frame)} rows, {frame.index[0].date()} .. {frame.index[-1].date()}")
    print(f"cached at {path}" if path else "bundled or local data: nothing to cache")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    try:
        if argv and argv[0] == "trial":  # the trial parses its own Katib-style flags
            from hpo_lib import trial

            return trial.main(argv[1:])
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        if args.command == "data" and args.data_command == "fetch":
            return _data_fetch(args)
        parser.print_help() if args.command is None else parser.parse_args([args.command, "--help"])
        return 2
    except HpoError as exc:
        print(f"hpo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hpo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
