"""ExaBGP configuration text and environment, generated from the peer set.

Pure code. Every neighbor is written out in full (no templates: ExaBGP's ``inherit`` would
override a neighbor's own values). Passwords are passed base64-encoded (``md5-base64``) so no
character of a Secret can break the configuration syntax; the text therefore holds secrets
and is written with mode 0600 by the process supervisor, never logged.

Routes are not in the configuration: bgpd announces them through the API, so a reload
(SIGUSR1) never withdraws anything and unchanged neighbors keep their sessions.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Mapping

from bgpd.peers import LocalSpeaker, Peer

PROCESS_NAME = "calyx-bridge"
DEFAULT_GRACEFUL_RESTART = 120


@dataclass(frozen=True)
class ExaBGPSettings:
    bridge_argv: tuple[str, ...]        # the API process ExaBGP runs
    listen_port: int = 179
    graceful_restart: int = DEFAULT_GRACEFUL_RESTART   # seconds, advertised when a peer sets none


def _quote_argv(argv: tuple[str, ...]) -> str:
    for arg in argv:
        if any(c in arg for c in " ;{}\"'\n"):
            raise ValueError(f"ExaBGP process argument {arg!r}: contains a character ExaBGP cannot quote")
    return " ".join(argv)


def neighbor_block(local: LocalSpeaker, peer: Peer, settings: ExaBGPSettings) -> str:
    gr = int(peer.graceful_restart_time) if peer.graceful_restart_time is not None else settings.graceful_restart
    lines = [
        f"neighbor {peer.address} {{",
        f'    description "{peer.peer_type.value} {peer.node or peer.source}";',
        f"    router-id {local.router_id};",
        # "auto": ExaBGP binds nothing, the kernel picks the source; ExaBGP learns it on connect
        f"    local-address {peer.local_address if peer.local_address is not None else 'auto'};",
        f"    local-as {local.as_number};",
        f"    peer-as {peer.peer_as};",
        "    passive false;",
        f"    connect {peer.port};",
        "    group-updates true;",
        # End-of-RIB once bgpd has handed over every route (bgpd.endofrib), not at session up
        "    manual-eor true;",
    ]
    if peer.hold_time is not None:
        lines.append(f"    hold-time {int(peer.hold_time)};")
    if peer.password is not None:
        encoded = base64.b64encode(peer.password.encode()).decode()
        lines.append(f"    md5-password {encoded};")
        lines.append("    md5-base64 true;")
    lines += [
        "    family {",
        "        ipv4 unicast;",
        "    }",
        "    capability {",
        f"        graceful-restart {gr};" if gr > 0 else "        graceful-restart disable;",
        "        route-refresh enable;",
        "    }",
        "    api {",
        f"        processes [ {PROCESS_NAME} ];",
        "        neighbor-changes;",
        "        receive {",
        "            parsed;",
        "            update;",
        "            open;",
        "            notification;",
        "        }",
        "    }",
        "}",
    ]
    return "\n".join(lines)


def render(local: LocalSpeaker, peers: Mapping[IPv4Address, Peer], settings: ExaBGPSettings) -> str:
    """The whole configuration file. Peers with a configuration error are left out."""
    blocks = [
        f"process {PROCESS_NAME} {{",
        f"    run {_quote_argv(settings.bridge_argv)};",
        "    encoder json;",
        "}",
    ]
    for address in sorted(peers):
        peer = peers[address]
        if peer.error is None:
            blocks.append(neighbor_block(local, peer, settings))
    return "\n".join(blocks) + "\n"


# ExaBGP's reactor works through queued API commands 50 routes per turn and, when no new input
# came, sleeps speed/100 s between turns: 10 ms at its default of 1.0. 0.3 (3 ms) moves routes
# about 1.7x faster for about 2 % more idle CPU of one core (bench.exabgp_api, bench/RESULTS.md).
REACTOR_SPEED = "0.3"


def environment(local: LocalSpeaker, settings: ExaBGPSettings) -> dict[str, str]:
    """Environment variables for the ExaBGP process (its settings, not the node's)."""
    return {
        "exabgp.daemon.user": "root",
        "exabgp.daemon.daemonize": "false",
        "exabgp.daemon.drop": "false",
        "exabgp.tcp.bind": str(local.address),
        "exabgp.tcp.port": str(settings.listen_port),
        "exabgp.api.ack": "true",
        "exabgp.api.encoder": "json",
        "exabgp.api.respawn": "true",
        "exabgp.log.destination": "stdout",
        # ExaBGP writes an INFO line for every route handed to its API; bgpd logs what matters
        "exabgp.log.level": "WARNING",
        "exabgp.cache.attributes": "true",
        "exabgp.reactor.speed": REACTOR_SPEED,
    }
