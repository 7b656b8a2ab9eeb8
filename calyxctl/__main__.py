"""``python -m calyxctl``: the same entry point as the ``calyxctl`` console script."""
from calyxctl.cli import main

raise SystemExit(main())
