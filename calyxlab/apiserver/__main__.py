"""``python -m calyxlab.apiserver``: the Kubernetes API emulator as a process."""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from calyx.observability import LOG_LEVELS, configure_logging
from calyxlab.apiserver.app import Settings
from calyxlab.apiserver.errors import APIError
from calyxlab.apiserver.resources import default_crd_dir
from calyxlab.apiserver.runner import serve_forever


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"--listen {value!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calyxlab.apiserver",
                                     description="In-memory Kubernetes API emulator (plain HTTP, no auth)")
    parser.add_argument("--listen", action="append", type=_listen, metavar="HOST:PORT",
                        help="address to listen on (repeatable; default 127.0.0.1:6443)")
    parser.add_argument("--crd-dir", type=Path, default=default_crd_dir(),
                        help="directory of CRD YAML files to serve (default: the chart's crds/)")
    parser.add_argument("--kubeconfig-out", type=Path, help="write a kubeconfig for the first address here")
    parser.add_argument("--bookmark-interval", type=float, default=5.0, metavar="S",
                        help="seconds between BOOKMARK events on watches that allow them (default 5)")
    parser.add_argument("--history", type=int, default=1000, metavar="N",
                        help="watch events kept per kind for resuming watches (default 1000)")
    parser.add_argument("--log-level", default="warning", choices=LOG_LEVELS)
    args = parser.parse_args(argv)
    if args.history < 1:
        parser.error(f"--history {args.history}: must be at least 1")
    if args.bookmark_interval <= 0:
        parser.error(f"--bookmark-interval {args.bookmark_interval}: must be positive")
    configure_logging(args.log_level)
    settings = Settings(history=args.history, bookmark_interval=args.bookmark_interval)
    try:
        asyncio.run(serve_forever(args.listen or [("127.0.0.1", 6443)], args.crd_dir, settings,
                                  args.kubeconfig_out))
    except APIError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot listen: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
