"""felix's route manager on the shared route sync, against an in-memory kernel: restart adopts
what is there with no write, pods' routes follow the desired state, a route the CNI plugin just
wrote survives until the pod's IP is known, and the metrics say what the kernel holds; the pod
MTU file is written only when it changes."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from prometheus_client import CollectorRegistry

from calyx import model
from calyx.kernelwatch import KernelResyncWanted, LinkChanged, RouteChanged
from calyx.memroutes import MemoryRouteWriter
from calyx.naming import cali_interface_name
from calyx.route import Route
from felix.calc import LocalFacts, blackhole_route, desired_dataplane, pod_route
from felix.dataplane.routes import RouteManager
from felix.metrics import FelixMetrics

NODE = "node-a"
POOL = model.IPPool("default", IPv4Network("10.244.0.0/16"))


def snapshot(*pods: model.PodInfo) -> model.Snapshot:
    node = model.NodeInfo(NODE, pod_cidrs=(IPv4Network("10.244.1.0/24"),))
    return model.Snapshot(nodes={NODE: node}, pods={p.key: p for p in pods}, ippools={POOL.name: POOL})


def pod(name: str, ip: str | None) -> model.PodInfo:
    return model.PodInfo("default", name, NODE, ips=(IPv4Address(ip),) if ip else (),
                         phase="Running" if ip else "Pending")


def manager(kernel: MemoryRouteWriter) -> tuple[RouteManager, CollectorRegistry]:
    registry = CollectorRegistry()
    routes = RouteManager(kernel, FelixMetrics.create(registry))
    routes.resync()
    return routes, registry


def reconcile(routes: RouteManager, snap: model.Snapshot):
    desired = desired_dataplane(snap, LocalFacts(NODE))
    return routes.reconcile(desired.routes, desired.reasons, desired.settling_devices)


def test_restart_with_everything_in_place_writes_nothing() -> None:
    web = pod_route("default", "web", IPv4Address("10.244.1.5"))
    kernel = MemoryRouteWriter([web.dev], [web, blackhole_route(IPv4Network("10.244.1.0/24"))])
    routes, metrics = manager(kernel)
    report = reconcile(routes, snapshot(pod("web", "10.244.1.5")))
    assert not report.changed and kernel.writes == 0
    assert metrics.get_sample_value("felix_routes_programmed") == 2


def test_a_new_pod_is_one_write_and_a_deleted_pod_one_delete() -> None:
    kernel = MemoryRouteWriter([cali_interface_name("default", n) for n in ("a", "b")])
    routes, _ = manager(kernel)
    reconcile(routes, snapshot(pod("a", "10.244.1.5")))
    before = kernel.writes
    report = reconcile(routes, snapshot(pod("a", "10.244.1.5"), pod("b", "10.244.1.6")))
    assert [r.dst for r in report.added] == [IPv4Network("10.244.1.6/32")] and kernel.writes == before + 1
    report = reconcile(routes, snapshot(pod("b", "10.244.1.6")))
    assert [r.dst for r in report.removed] == [IPv4Network("10.244.1.5/32")]


def test_the_cni_plugins_route_survives_until_the_pod_ip_is_known() -> None:
    cni = pod_route("default", "new-0", IPv4Address("10.244.1.77"))
    stale = pod_route("default", "gone", IPv4Address("10.244.1.78"))
    kernel = MemoryRouteWriter([cni.dev, stale.dev], [cni, stale])
    routes, _ = manager(kernel)
    report = reconcile(routes, snapshot(pod("new-0", None)))
    assert report.removed == (stale,) and cni.dst in kernel.routes


def test_kernel_events_keep_the_view_current() -> None:
    web = pod_route("default", "web", IPv4Address("10.244.1.5"))
    kernel = MemoryRouteWriter([web.dev])
    routes, metrics = manager(kernel)
    snap = snapshot(pod("web", "10.244.1.5"))
    reconcile(routes, snap)
    del kernel.routes[web.dst]
    absorbed = routes.absorb([RouteChanged(web, False), LinkChanged("eth9", True), KernelResyncWanted()])
    assert absorbed.changed and absorbed.resync_wanted
    assert [r.dst for r in reconcile(routes, snap).added] == [web.dst]
    kernel.remove_link(web.dev)
    routes.absorb([LinkChanged(web.dev, False)])
    report = reconcile(routes, snap)
    assert report.pending == (web,) and metrics.get_sample_value("felix_routes_pending") == 1


def test_the_pod_mtu_file_is_written_only_when_it_changes(tmp_path) -> None:
    from felix.dataplane.mtufile import PodMtuFile
    mtu = PodMtuFile(tmp_path / "run")
    assert mtu.write(1480) and mtu.path.read_text() == "1480\n"
    assert not mtu.write(1480)
    assert mtu.write(1500) and mtu.path.read_text() == "1500\n"
    assert [p.name for p in mtu.path.parent.iterdir()] == ["mtu"]


def test_a_released_remote_block_route_is_kept_for_the_grace_unless_bgpd_takes_it_over() -> None:
    vtep = IPv4Address("10.244.2.0")
    carried = Route(IPv4Network("10.244.2.0/24"), 80, dev="vxlan.calico", gateway=vtep, onlink=True)
    other = Route(IPv4Network("10.244.3.0/24"), 80, dev="vxlan.calico", gateway=IPv4Address("10.244.3.0"),
                  onlink=True)
    kernel = MemoryRouteWriter(["eth0", "vxlan.calico", "tunl0"], [carried, other])
    routes = RouteManager(kernel, FelixMetrics.create(CollectorRegistry()), release_grace=30.0)
    routes.resync()
    routes.reconcile({carried.dst: carried, other.dst: other}, {}, now=100.0)
    assert kernel.writes == 0 and routes.release_at is None
    routes.reconcile({}, {}, now=101.0)                  # both pools left VXLAN
    assert kernel.routes == {carried.dst: carried, other.dst: other} and routes.release_at == 131.0
    taken = Route(carried.dst, 186, dev="tunl0", gateway=vtep, onlink=True)
    kernel.routes[taken.dst] = taken                     # bgpd replaces one in place
    routes.absorb([RouteChanged(taken, True)])
    routes.reconcile({}, {}, now=120.0)
    assert kernel.routes[carried.dst] == taken and kernel.writes == 0
    routes.reconcile({}, {}, now=131.0)                  # nobody took the other: gone after the grace
    assert other.dst not in kernel.routes and kernel.routes[carried.dst] == taken
    assert routes.release_at is None
