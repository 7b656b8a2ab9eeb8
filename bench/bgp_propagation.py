"""bgpd propagation against BIRD: node A starts advertising N prefixes; time until all N are
in node B's kernel.

Calyx: two namespaces on a bridge, a real Kubernetes control plane, a real ``bgpd`` (with its
ExaBGP) on each node, full mesh, plain BGP (pools ipipMode Never, blockSize 26). Blocks are
given as Calyx IPAM gives them: one ``IPAMBlock`` per /26 with ``affinity: host:<node>``
(neither Node has ``spec.podCIDRs``, which would hide its blocks). B gets one block (in pool
``bench``) before its daemons start, so the session can be seen carrying routes. A's N blocks
are created concurrently in a second pool, ``bench-a``, that starts with ``disableBGPExport:
true`` (a real API server has no bulk create, and creating 10k objects takes it half a minute:
see :class:`bench.testbed.BlockWrites`); once they are written and A's bgpd has seen them, one
replace of ``bench-a`` clears ``disableBGPExport``, and the timing runs from that write until
B's kernel holds N ``proto bgp`` routes. So the figure is bgpd's and ExaBGP's, not the API's:
one object through the watch, A's recalculation and announcements, B's reception and installs.
BIRD: the same two namespaces with BIRD on both ends (iBGP, A's N routes in a static protocol
that starts disabled; B exports what it learns to the kernel); timed from ``birdc enable`` until
B's kernel holds N ``proto bird`` routes. The kernel is polled every 20 ms.

    .venv/bin/python -m bench.bgp_propagation [--quick] [--sizes 100,1000,10000]
"""
from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from bench.common import Report, cpu_seconds, parse_sizes, rss_mib, wait_until
from bench.testbed import BGP_PROTO, BIRD_PROTO, POOL_NAME, WRITERS, Node, Testbed, check_alive

POOL = ipaddress.IPv4Network("100.64.0.0/12")          # A's blocks (pool bench-a)
B_POOL = ipaddress.IPv4Network("100.127.0.0/16")       # B's block (pool bench)
A_POOL_NAME = "bench-a"
SEEN = 3.0      # seconds for A's bgpd to take in the last of A's blocks before the timed write
AS = 64512


def prefixes(n: int) -> list[str]:
    """N /26 pod blocks inside POOL."""
    blocks = POOL.subnets(new_prefix=26)
    return [str(next(blocks)) for _ in range(n)]


@dataclass
class Outcome:
    seconds: float
    rss_idle: dict[str, float] = field(default_factory=dict)    # process -> MiB on node B, before
    rss_loaded: dict[str, float] = field(default_factory=dict)  # ... with the N routes learned
    api_seconds: float = 0.0                                    # Calyx: the N IPAMBlock creates alone
    cpu_loaded: dict[str, float] = field(default_factory=dict)  # process -> CPU % on node B, idle with N routes


def _session_up(node: Node, proto: int, expected: int) -> bool:
    return node.routes(proto) == expected


def calyx_pids(bed: Testbed, node: Node) -> dict[str, list[int]]:
    out = {"bgpd": [node.procs["bgpd"].pid], "ExaBGP (+API bridge)": bed.exabgp_pids(node)}
    if "felix" in node.procs:
        out["felix"] = [node.procs["felix"].pid]
    return out


def cpu_share(pids: dict[str, list[int]], seconds: float) -> dict[str, float]:
    """Per process group: its CPU time over the next ``seconds``, as a percentage of one core."""
    def total(group: list[int]) -> float:
        return sum(_safe(cpu_seconds, pid) for pid in group)
    before = {name: total(group) for name, group in pids.items()}
    time.sleep(seconds)
    return {name: 100 * (total(group) - before[name]) / seconds for name, group in pids.items()}


def _safe(read: Callable[[int], float], pid: int) -> float:
    try:
        return read(pid)
    except (ProcessLookupError, FileNotFoundError):
        return 0.0


def calyx_rss(bed: Testbed, node: Node) -> dict[str, float]:
    out = {"bgpd": node.procs["bgpd"].rss(),
           "ExaBGP (+API bridge)": sum(_safe(rss_mib, pid) for pid in bed.exabgp_pids(node))}
    if "felix" in node.procs:
        out["felix"] = node.procs["felix"].rss()
    return out


def run_calyx(n: int, with_felix: bool = False, settle: float = 0.0) -> Outcome:
    with Testbed("cxbp") as bed:
        a, b = bed.add_node("node-a"), bed.add_node("node-b")
        bed.start_api()
        a_pool = {"cidr": str(POOL), "ipipMode": "Never", "blockSize": 26}
        bed.put("ippools", POOL_NAME, {"cidr": str(B_POOL), "ipipMode": "Never", "blockSize": 26})
        bed.put("ippools", A_POOL_NAME, {**a_pool, "disableBGPExport": True})
        bed.create_node(a)
        bed.create_node(b)
        # B advertises one block so we can see the session is up and routes flow both ways
        b_block = str(ipaddress.IPv4Network((int(B_POOL.broadcast_address) - 63, 26)))
        bed.create_blocks([(b.name, b_block)])
        procs = [bed.start_bgpd(a), bed.start_bgpd(b)]
        if with_felix:
            procs += [bed.start_felix(a), bed.start_felix(b)]
        wait_until(lambda: check_alive(procs) or a.routes(BGP_PROTO) == 1, 120, 0.1, "the A-B session")
        time.sleep(settle)
        idle = calyx_rss(bed, b)
        writes = bed.create_blocks([(a.name, cidr) for cidr in prefixes(n)], pool=A_POOL_NAME)
        time.sleep(SEEN)
        check_alive(procs)
        early = b.routes(BGP_PROTO)
        if early > 0:
            raise RuntimeError(f"node B learned {early} of A's blocks before their export was enabled")
        start = time.monotonic()
        bed.put("ippools", A_POOL_NAME, a_pool)

        def arrived() -> bool:
            check_alive(procs)
            return b.routes(BGP_PROTO) == n

        done = wait_until(arrived, 300 + n / 10, 0.02, f"{n} routes on node B")
        elapsed = done - start
        time.sleep(settle)
        cpu = cpu_share(calyx_pids(bed, b), settle) if settle else {}
        check_alive(procs)
        return Outcome(elapsed, idle, calyx_rss(bed, b), api_seconds=writes.seconds, cpu_loaded=cpu)


def bird_config(me: Node, peer: Node, blocks: Sequence[str], install: bool) -> str:
    statics = "\n".join(f"  route {p} blackhole;" for p in blocks)
    return f"""router id {me.address.ip};
protocol device {{ scan time 10; }}
protocol kernel {{
  ipv4 {{ import none; export {"all" if install else "none"}; }};
  merge paths off;
}}
protocol static adv {{
  disabled;
  ipv4;
{statics}
}}
protocol bgp peer {{
  local {me.address.ip} as {AS};
  neighbor {peer.address.ip} as {AS};
  direct;
  hold time 90;
  ipv4 {{ import all; export all; next hop self; gateway direct; }};
}}
"""


def bird_rss(node: Node) -> dict[str, float]:
    return {"BIRD": node.procs["bird"].rss()}


def run_bird(n: int, settle: float = 0.0) -> Outcome:
    with Testbed("cxbb") as bed:
        a, b = bed.add_node("node-a"), bed.add_node("node-b")
        blocks = prefixes(n)
        procs = [bed.start_bird(a, bird_config(a, b, blocks, install=False)),
                 bed.start_bird(b, bird_config(b, a, (), install=True))]
        wait_until(lambda: check_alive(procs) or "Established" in bed.birdc(b, "show", "protocols", "peer"),
                   120, 0.1, "the BIRD A-B session")
        time.sleep(settle)
        idle = bird_rss(b)
        start = time.monotonic()
        bed.birdc(a, "enable", "adv")
        done = wait_until(lambda: b.routes(BIRD_PROTO) == n, 120 + n / 20, 0.02, f"{n} BIRD routes on node B")
        elapsed = done - start
        time.sleep(settle)
        cpu = cpu_share({"BIRD": [procs[1].pid]}, settle) if settle else {}
        check_alive(procs)
        return Outcome(elapsed, idle, bird_rss(b), cpu_loaded=cpu)


def main(argv: Sequence[str] | None = None) -> Report:
    sizes = parse_sizes(__doc__.split("\n\n")[0], (100, 1000, 10000), (100,), argv, "prefix counts")
    report = Report("bgpd propagation: A advertises N prefixes -> all in B's kernel (plain BGP)",
                    ".venv/bin/python -m bench.bgp_propagation" + (" --quick" if sizes.quick else ""),
                    ("prefixes", "Calyx s", "BIRD s", "Calyx/BIRD", "Calyx routes/s", "BIRD routes/s",
                     "A's block creates s (untimed)"))
    for n in sizes.values:
        calyx = run_calyx(n)
        bird = run_bird(n)
        report.add(n, calyx.seconds, bird.seconds, calyx.seconds / bird.seconds, n / calyx.seconds,
                   n / bird.seconds, calyx.api_seconds)
    report.note("Calyx is timed from the one IPPool replace that lets node A advertise its N blocks (written "
                "beforehand, with disableBGPExport) until B's kernel holds all N; BIRD from `birdc enable`. "
                "Both end when B's kernel holds all N routes (20 ms polling). The last column is how long the "
                f"API took to create A's N IPAMBlocks ({WRITERS} concurrent writers) before the timed part.")
    report.finish(sizes.results)
    return report


if __name__ == "__main__":
    main()
