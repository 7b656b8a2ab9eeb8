"""``python -m calyx.cni``, and the entry script of the self-contained plugin executable."""
import sys

from calyx.cni.plugin import main

if __name__ == "__main__":
    sys.exit(main())
