"""The lab's wiring as iproute2 batch text (pure): management bridge, namespaces, veths.

Two steps, each one process: :func:`root_batch` runs in the kernel's root namespace (bridge,
namespaces, every veth created with both ends directly in their namespaces, since interface
names repeat across nodes); :func:`node_script` runs once inside each node namespace (``lo``
up, eth0 address, link ends up, forwarding on). No default route points at the management
network: node-to-node traffic never hairpins through the machine running the lab.
"""
from __future__ import annotations

from calyxlab.state import LabNames
from calyxlab.topology import MGMT_INTERFACE, Role, Topology

ROUTER_ROLES = (Role.FRR, Role.BIRD, Role.GOBGP)


def root_batch(topo: Topology, names: LabNames, *, bridge_address: str | None,
               create_bridge: bool = True) -> str:
    """``ip -batch`` text for the root namespace.

    ``bridge_address`` (ADDR/LEN) goes on the management bridge; ``create_bridge`` is False
    under UML, whose init script has already made the bridge (holding the agent's address).
    """
    lines = []
    if create_bridge:
        lines.append(f"link add {names.bridge} type bridge")
        if bridge_address:
            lines.append(f"addr add {bridge_address} dev {names.bridge}")
        lines.append(f"link set {names.bridge} up")
    for node in topo.nodes:
        ns = names.namespace(node.name)
        veth = names.mgmt_veth(node.name)
        lines.append(f"netns add {ns}")
        lines.append(f"link add {veth} type veth peer name {MGMT_INTERFACE} netns {ns}")
        lines.append(f"link set {veth} master {names.bridge} up")
    for link in topo.links:
        lines.append(f"link add {link.a.interface} netns {names.namespace(link.a.node)} type veth "
                     f"peer name {link.b.interface} netns {names.namespace(link.b.node)}")
    return "\n".join(lines) + "\n"


def node_script(topo: Topology, node: str) -> str:
    """Shell script run inside ``node``'s namespace to bring its interfaces up."""
    ip = topo.mgmt_addresses[node]
    ifaces = [ep.interface for link in topo.links for ep in (link.a, link.b) if ep.node == node]
    batch = ["link set lo up", f"addr add {ip}/{topo.mgmt.subnet.prefixlen} dev {MGMT_INTERFACE}",
             f"link set {MGMT_INTERFACE} up"] + [f"link set {i} up" for i in ifaces]
    sysctls = ["net/ipv4/ip_forward"]
    if topo.node(node).role in ROUTER_ROLES:
        # Router daemons start before the exec lines that address the interfaces (as in a
        # container); this lets one configured to listen on such an address start anyway.
        sysctls.append("net/ipv4/ip_nonlocal_bind")
    return ("set -e\n"
            "ip -batch - <<'EOF'\n" + "\n".join(batch) + "\nEOF\n"
            + "".join(f"echo 1 > /proc/sys/{s}\n" for s in sysctls))
