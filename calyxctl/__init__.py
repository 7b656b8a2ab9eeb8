"""``calyxctl``: the operator's command line for a Calyx cluster (node status, IPAM, resources,
tracing a packet's path).

Each command lives in its own module exposing ``add_parser(subparsers)`` and ``run(args)``;
:mod:`calyxctl.cli` puts them together. Pure shaping and analysis live in :mod:`calyxctl.tables`,
:mod:`calyxctl.resourceview`, :mod:`calyxctl.ipamview`, :mod:`calyxctl.statusview` and
:mod:`calyxctl.trace` (its own package: facts, analysis, render).
"""
