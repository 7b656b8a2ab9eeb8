"""What each node role runs: daemon command lines and readiness probes (pure).

A cluster node runs ``felix`` and ``bgpd`` (the console scripts beside this interpreter;
``CALYX_LAB_DAEMONS`` picks a subset or ``none``). Router images run the Debian-packaged
daemon with the configuration file their ``binds`` put where the real image expects it:
FRR (zebra, staticd and the daemons enabled in ``/etc/frr/daemons``, then ``vtysh -b``),
BIRD (``/etc/bird/bird.conf``) and GoBGP (``/etc/gobgp/gobgp.{yml,yaml,toml,json}``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from calyxlab.topology import Node, Role

CLUSTER_DAEMONS = ("felix", "bgpd")
DAEMONS_ENV = "CALYX_LAB_DAEMONS"
FRR_LIBEXEC = "/usr/lib/frr"
FRR_DAEMONS_FILE = "/etc/frr/daemons"
FRR_ALWAYS = ("zebra", "staticd")
FRR_KNOWN = ("bgpd", "ospfd", "ospf6d", "ripd", "ripngd", "isisd", "pimd", "ldpd", "nhrpd",
             "eigrpd", "babeld", "pbrd", "bfdd", "fabricd", "vrrpd", "pathd")
BIRD_CONFIG = "/etc/bird/bird.conf"
GOBGP_CONFIG_DIR = "/etc/gobgp"
GOBGP_TYPES = {".yml": "yaml", ".yaml": "yaml", ".toml": "toml", ".json": "json"}


class RoleError(ValueError):
    """A node's configuration does not let its role start (names node and problem)."""


@dataclass(frozen=True)
class DaemonSpec:
    """One long-running process of a node, started in the node's view."""

    name: str
    argv: tuple[str, ...]
    ready: tuple[str, ...] | None = None   # command that succeeds once the daemon is usable


def cluster_daemons(node: Node) -> tuple[str, ...]:
    """Names of the daemons a cluster node runs (env CALYX_LAB_DAEMONS)."""
    raw = node.env.get(DAEMONS_ENV, ",".join(CLUSTER_DAEMONS)).strip()
    if raw in ("", "none"):
        return ()
    wanted = tuple(d.strip() for d in raw.split(",") if d.strip())
    unknown = [d for d in wanted if d not in CLUSTER_DAEMONS]
    if unknown:
        raise RoleError(f"node {node.name!r}: env {DAEMONS_ENV}={raw!r}: unknown daemon(s) "
                        f"{', '.join(unknown)} (choose from {', '.join(CLUSTER_DAEMONS)} or none)")
    return wanted


def frr_enabled(daemons_text: str | None) -> tuple[str, ...]:
    """FRR daemons to start given the content of /etc/frr/daemons (None: bgpd only)."""
    enabled = ["bgpd"] if daemons_text is None else []
    for line in (daemons_text or "").splitlines():
        key, _, value = line.strip().partition("=")
        if key in FRR_KNOWN and value.strip().strip('"') == "yes":
            enabled.append(key)
    return FRR_ALWAYS + tuple(enabled)


def router_daemons(node: Node) -> tuple[DaemonSpec, ...]:
    """The daemons of a router node, in start order."""
    if node.role is Role.FRR:
        bind = node.bind_for(FRR_DAEMONS_FILE)
        text = Path(bind.source).read_text() if bind else None
        specs = []
        for name in frr_enabled(text):
            extra = ("-s", "90000000") if name == "zebra" else ()
            specs.append(DaemonSpec(name, (f"{FRR_LIBEXEC}/{name}", "-A", "127.0.0.1") + extra,
                                    ("test", "-S", f"/run/frr/{name}.vty")))
        return tuple(specs)
    if node.role is Role.BIRD:
        config = next((b.destination for b in node.binds
                       if b.destination.startswith("/etc/bird")), BIRD_CONFIG)
        return (DaemonSpec("bird", ("bird", "-f", "-c", config, "-s", "/run/bird/bird.ctl"),
                           ("birdc", "-s", "/run/bird/bird.ctl", "show", "status")),)
    if node.role is Role.GOBGP:
        config = next((b.destination for b in node.binds
                       if b.destination.startswith(GOBGP_CONFIG_DIR + "/")
                       and Path(b.destination).suffix in GOBGP_TYPES), None)
        if config is None:
            raise RoleError(f"node {node.name!r}: image {node.image!r} needs a bind onto "
                            f"{GOBGP_CONFIG_DIR}/gobgp.yml (or .yaml/.toml/.json)")
        return (DaemonSpec("gobgpd", ("gobgpd", "-f", config, "-t",
                                      GOBGP_TYPES[Path(config).suffix], "-p",
                                      "--pprof-disable", "--api-hosts", "127.0.0.1:50051"),
                           ("gobgp", "global")),)
    return ()


FRR_APPLY_CONFIG = ("vtysh", "-b")
