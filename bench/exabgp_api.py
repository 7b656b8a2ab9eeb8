"""ExaBGP's API as a sender: N prefixes handed to ExaBGP's API -> all in a BIRD peer's kernel,
for the ways of driving ExaBGP that its configuration and API allow, against BIRD -> BIRD.

bgpd is not in the loop: a small feeder process (ExaBGP's ``process``) writes, at a trigger,
exactly the commands bgpd would send (``neighbor X announce attributes ... nlri P1 P2 ...``,
attributes shared by every NLRI of a line) to node A's ExaBGP; node B is BIRD, exporting what
it learns to the kernel. Timed from the trigger until B's kernel holds N ``proto bird`` routes
(20 ms polling); ExaBGP's CPU time over the same span is read from ``/proc``, and so is its CPU
share over a few idle seconds of the established session before (what a faster reactor costs
when nothing happens). Each variant
changes one thing from the one before:

* ``bgpd's settings``: the environment bgpd gives ExaBGP (log level INFO, reactor speed 1.0),
  500 NLRI per command;
* ``log WARNING``: ExaBGP no longer writes a log line per route it is handed;
* ``+ reactor speed 0.3`` / ``0.1``: ExaBGP's reactor sleeps 3 ms / 1 ms instead of 10 ms
  between turns when it has no new input (``exabgp.reactor.speed``; it works through queued API
  work 50 steps per turn);
* ``+ 5000 NLRI per command``: ten times fewer, larger commands.

    .venv/bin/python -m bench.exabgp_api [--quick] [--sizes 1000,10000]
"""
from __future__ import annotations

import ipaddress
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bench.bgp_propagation import AS, bird_config, prefixes, run_bird
from bench.common import Report, cpu_seconds, parse_sizes, wait_until
from bench.testbed import BIRD_PROTO, VENV_BIN, Node, Testbed, check_alive
from bgpd.exabgp import messages as msg
from bgpd.rib import Attributes

FEEDER = """import os, sys, time
trigger, lines = sys.argv[1], sys.argv[2]
while not os.path.exists(trigger):
    time.sleep(0.005)
with open(lines) as f:
    for line in f:
        sys.stdout.write(line)
sys.stdout.flush()
while True:
    if not sys.stdin.readline():
        break
"""


@dataclass(frozen=True)
class Variant:
    name: str
    log_level: str = "INFO"
    reactor_speed: float = 1.0
    nlri_per_line: int = msg.NLRI_PER_LINE


VARIANTS = (
    Variant("bgpd's settings"),
    Variant("log WARNING", log_level="WARNING"),
    Variant("+ reactor speed 0.3", log_level="WARNING", reactor_speed=0.3),
    Variant("+ reactor speed 0.1", log_level="WARNING", reactor_speed=0.1),
    Variant("+ 5000 NLRI per command", log_level="WARNING", reactor_speed=0.1, nlri_per_line=5000),
)


def commands(peer: ipaddress.IPv4Address, next_hop: ipaddress.IPv4Address, blocks: Sequence[str],
             per_line: int) -> list[str]:
    """The commands bgpd sends for ``blocks`` (one attribute set), ``per_line`` NLRI each."""
    head = f"neighbor {peer} announce attributes {msg.attribute_text(Attributes(next_hop=next_hop))} nlri "
    return [head + " ".join(blocks[i:i + per_line]) + "\n" for i in range(0, len(blocks), per_line)]


def exabgp_config(a: Node, b: Node, feeder: Path, trigger: Path, lines: Path) -> str:
    return f"""process feeder {{
  run {sys.executable} {feeder} {trigger} {lines};
  encoder json;
}}
neighbor {b.address.ip} {{
  router-id {a.address.ip};
  local-address {a.address.ip};
  local-as {AS};
  peer-as {AS};
  family {{ ipv4 unicast; }}
  api {{ processes [ feeder ]; }}
}}
"""


IDLE = 3.0     # seconds of an idle, established session over which ExaBGP's idle CPU is read


def run_exabgp(n: int, variant: Variant) -> tuple[float, float, float]:
    """(seconds until B's kernel holds N routes, ExaBGP's CPU seconds meanwhile, ExaBGP's CPU
    share while idle before)."""
    with Testbed("cxbx") as bed:
        a, b = bed.add_node("node-a"), bed.add_node("node-b")
        feeder = bed.workdir / "feeder.py"
        feeder.write_text(FEEDER)
        trigger, lines = bed.workdir / "go", bed.workdir / "commands"
        lines.write_text("".join(commands(b.address.ip, a.address.ip, prefixes(n), variant.nlri_per_line)))
        conf = a.run_dir / "exabgp.conf"
        conf.write_text(exabgp_config(a, b, feeder, trigger, lines))
        env = {"exabgp.daemon.daemonize": "false", "exabgp.daemon.drop": "false", "exabgp.daemon.user": "root",
               "exabgp.tcp.bind": str(a.address.ip), "exabgp.api.ack": "true", "exabgp.api.encoder": "json",
               "exabgp.log.destination": "stdout", "exabgp.log.level": variant.log_level,
               "exabgp.cache.attributes": "true", "exabgp.reactor.speed": str(variant.reactor_speed)}
        procs = [bed.start_bird(b, bird_config(b, a, (), install=True)),
                 bed.spawn("exabgp-node-a", [str(VENV_BIN / "exabgp"), str(conf)], a.netns, env)]
        wait_until(lambda: check_alive(procs) or "Established" in bed.birdc(b, "show", "protocols", "peer"),
                   120, 0.1, "the ExaBGP-BIRD session")
        exabgp = procs[1].pid           # `ip netns exec` execs ExaBGP in its place
        time.sleep(1.0)
        idle_from = cpu_seconds(exabgp)
        time.sleep(IDLE)
        idle = (cpu_seconds(exabgp) - idle_from) / IDLE
        cpu = cpu_seconds(exabgp)
        start = time.monotonic()
        trigger.write_text("go")
        done = wait_until(lambda: check_alive(procs) or b.routes(BIRD_PROTO) == n, 120 + n / 20, 0.02,
                          f"{n} routes on node B")
        return done - start, cpu_seconds(exabgp) - cpu, idle


def main(argv: Sequence[str] | None = None) -> Report:
    sizes = parse_sizes(__doc__.split("\n\n")[0], (1000, 10000), (100,), argv, "prefix counts")
    report = Report("ExaBGP's API as a sender: N prefixes handed to ExaBGP -> all in a BIRD peer's kernel",
                    ".venv/bin/python -m bench.exabgp_api" + (" --quick" if sizes.quick else ""),
                    ("prefixes", "sender", "seconds", "sender CPU s", "x BIRD->BIRD", "routes/s",
                     "sender idle CPU %"))
    for n in sizes.values:
        bird = run_bird(n)
        for variant in VARIANTS:
            seconds, cpu, idle = run_exabgp(n, variant)
            report.add(n, f"ExaBGP, {variant.name}", seconds, cpu, seconds / bird.seconds, n / seconds, 100 * idle)
        report.add(n, "BIRD", bird.seconds, "", 1.0, n / bird.seconds, "")
    report.note("Timed from the moment the commands are released to ExaBGP's API (BIRD: `birdc enable`) "
                "until node B's kernel holds all N routes; B is BIRD in every row.")
    report.finish(sizes.results)
    return report


if __name__ == "__main__":
    main()
