"""The pod MTU file: where felix tells the CNI plugin which MTU to give new pods
(``$CALYX_RUN_DIR/mtu``), replaced atomically and written only when it changes."""
from __future__ import annotations

import os
from pathlib import Path

from calyx.naming import MTU_FILE
from calyx.logs import get_logger


class PodMtuFile:
    def __init__(self, run_dir: Path | str) -> None:
        self.path = Path(run_dir) / MTU_FILE
        self._log = get_logger("felix.mtu")

    def write(self, mtu: int) -> bool:
        """Write ``mtu``; False when the file already said so."""
        text = f"{mtu}\n"
        try:
            if self.path.read_text() == text:
                return False
        except OSError:
            pass
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{MTU_FILE}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, self.path)
        self._log.info("pod MTU written", path=str(self.path), mtu=mtu)
        return True
