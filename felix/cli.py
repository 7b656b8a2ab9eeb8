"""The ``felix`` command: configuration from flags, environment and file; SIGTERM/SIGINT stop
felix cleanly and leave the dataplane as it is."""
from __future__ import annotations

import signal
import sys
from typing import Sequence

from calyx.config import ConfigError, load_config
from calyx.kube.client import ClientConfigError
from calyx.logs import configure_logging, get_logger
from felix.config import FelixConfig
from felix.daemon import Felix


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(FelixConfig, sys.argv[1:] if argv is None else argv, prog="felix",
                             description="Calyx node agent: pod routes, block blackholes, the IPIP device")
    except ConfigError as exc:
        print(f"felix: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, config.log_format)
    log = get_logger("felix")
    try:
        felix = Felix(config)
    except ClientConfigError as exc:
        log.error("cannot start", error=str(exc))
        return 2
    def request_stop(signum: int, _frame: object) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        felix.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    felix.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
