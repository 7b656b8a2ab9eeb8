"""Per-node address assignment: which pod holds which address of the node's pod CIDRs.

The state lives on the node under ``$run_dir/ipam/``: ``state.json`` (container ID + interface
+ pod -> address) is rewritten atomically (temp file, fsync, rename) under an exclusive
``fcntl`` lock on ``lock``, so concurrent ADD/DEL invocations never hand out one address twice
and a crash at any instant leaves either the old or the new state, never a torn file.

The node's CIDRs themselves (``spec.podCIDRs`` or claimed IPAM blocks) come from a
:class:`CidrSource` (the API); when every CIDR is full the source is asked to claim another one.
The first address of every CIDR is kept for the node's tunnel device and never given to a pod.

The CIDRs the API last confirmed are cached in ``state.json`` with the time of that
confirmation (``CLOCK_BOOTTIME``, shared by every process on the node). While the confirmation
is younger than the cache TTL, ADD allocates from the cached CIDRs without talking to the API
(without even importing the Kubernetes client): that is the common, cheap ADD. Only an empty,
stale or full cache takes the slow path, which asks the API again (and claims a block when
needed), still under the node lock so that one invocation does it while the others wait and
then find a fresh cache. Why a cached block cannot have been released meanwhile: the garbage
collector releases a node's blocks only after it has seen the Node object absent for longer
than the TTL (``blocks.NODE_GRACE_S`` > ``CACHE_TTL_S``), so every confirmation that still
covers "now" was made while the Node existed and the block was still affine to it; a
confirmation made later finds the block gone and drops it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import random
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Callable, Iterator, Protocol, Sequence

from calyx import naming
from calyx.cni.config import ERR_INVALID_CONFIG, ERR_IO, ERR_TRY_AGAIN_LATER, MAX_CACHE_TTL_S, CniError

STATE_VERSION = 2
READABLE_VERSIONS = (1, 2)            # version 1 had no CIDR cache: it reads as an empty cache
CACHE_TTL_S = MAX_CACHE_TTL_S         # how long the API's word on the node's CIDRs is trusted
LOCK_TIMEOUT_S = 90.0
LOCK_POLL_MIN_S = 0.002
LOCK_POLL_MAX_S = 0.05
TEMP_PREFIX = ".state."              # a new state.json is written under this name, then renamed


@dataclass(frozen=True)
class Allocation:
    """One address held by one pod interface."""

    address: IPv4Address
    container_id: str
    ifname: str
    namespace: str
    pod: str
    host_ifname: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.container_id, self.ifname)

    def to_json(self) -> dict[str, str]:
        return {"address": str(self.address), "containerID": self.container_id, "ifname": self.ifname,
                "namespace": self.namespace, "pod": self.pod, "hostInterface": self.host_ifname}

    @classmethod
    def from_json(cls, raw: Any, path: str) -> "Allocation":
        try:
            return cls(address=IPv4Address(raw["address"]), container_id=str(raw["containerID"]),
                       ifname=str(raw["ifname"]), namespace=str(raw["namespace"]), pod=str(raw["pod"]),
                       host_ifname=str(raw["hostInterface"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CniError(ERR_IO, f"{path}: allocation {raw!r}: unreadable ({exc})") from None


def clock_now() -> float:
    """Seconds since boot, suspend included: one clock for every process of this node, and a
    reboot (which forgets every cached fact's age) can only make a cached time look newer than
    now, which :meth:`State.cache_is_fresh` treats as stale."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass(frozen=True)
class State:
    """The node's address assignments and cached CIDRs (immutable; every change makes a new State)."""

    allocations: tuple[Allocation, ...] = ()
    cidrs: tuple[IPv4Network, ...] = ()          # the node's CIDRs as the API last confirmed them
    confirmed_at: float | None = None            # clock_now() of that confirmation

    def cache_is_fresh(self, now: float, ttl: float) -> bool:
        """True when the cached CIDRs may be used without asking the API."""
        return (bool(self.cidrs) and self.confirmed_at is not None
                and 0.0 <= now - self.confirmed_at < ttl)

    def with_cidrs(self, cidrs: Sequence[IPv4Network], confirmed_at: float) -> "State":
        return replace(self, cidrs=tuple(cidrs), confirmed_at=confirmed_at)

    def find(self, container_id: str, ifname: str) -> Allocation | None:
        return next((a for a in self.allocations if a.key == (container_id, ifname)), None)

    def find_by_host_ifname(self, host_ifname: str) -> list[Allocation]:
        return [a for a in self.allocations if a.host_ifname == host_ifname]

    def used(self) -> frozenset[IPv4Address]:
        return frozenset(a.address for a in self.allocations)

    def with_allocation(self, alloc: Allocation) -> "State":
        return replace(self, allocations=tuple(a for a in self.allocations if a.key != alloc.key) + (alloc,))

    def without(self, container_id: str, ifname: str) -> "State":
        return replace(self, allocations=tuple(a for a in self.allocations if a.key != (container_id, ifname)))

    def to_json(self) -> str:
        return json.dumps({"version": STATE_VERSION, "cidrs": [str(c) for c in self.cidrs],
                           "confirmedAt": self.confirmed_at,
                           "allocations": [a.to_json() for a in self.allocations]}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path: str) -> "State":
        if not text.strip():
            return cls()
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise CniError(ERR_IO, f"{path}: corrupt IPAM state ({exc}); inspect it before removing") from None
        if not isinstance(raw, dict) or raw.get("version") not in READABLE_VERSIONS:
            raise CniError(ERR_IO, f"{path}: version: {raw.get('version') if isinstance(raw, dict) else raw!r}: "
                                   f"unknown IPAM state format (want {STATE_VERSION})")
        try:
            cidrs = tuple(IPv4Network(c) for c in raw.get("cidrs") or ())
            confirmed = raw.get("confirmedAt")
            confirmed_at = None if confirmed is None else float(confirmed)
        except (TypeError, ValueError) as exc:
            raise CniError(ERR_IO, f"{path}: cidrs/confirmedAt: unreadable ({exc}); inspect it before removing") from None
        return cls(allocations=tuple(Allocation.from_json(a, path) for a in raw.get("allocations", [])),
                   cidrs=cidrs, confirmed_at=confirmed_at)


def reserved_address(cidr: IPv4Network) -> IPv4Address:
    """The address of a CIDR kept for the node (tunl0): its first (network) address."""
    return cidr.network_address


def pick_address(cidrs: Sequence[IPv4Network], used: frozenset[IPv4Address]) -> IPv4Address | None:
    """The lowest free pod address of the CIDRs, in the given order; None when all are full."""
    for cidr in cidrs:
        base = int(cidr.network_address)
        for offset in range(1, cidr.num_addresses):
            candidate = IPv4Address(base + offset)
            if candidate not in used:
                return candidate
    return None


class CidrSource(Protocol):
    """Where the node's pod CIDRs come from (the API): current ones, and one more on demand."""

    def current(self) -> tuple[IPv4Network, ...]: ...

    def claim_more(self) -> IPv4Network: ...   # raises CniError when every pool is exhausted


class AddressStore:
    """The on-disk state under ``<run_dir>/ipam`` and its lock."""

    def __init__(self, run_dir: str):
        self.dir = os.path.join(run_dir, naming.IPAM_DIR)
        self.state_path = os.path.join(self.dir, "state.json")
        self.lock_path = os.path.join(self.dir, "lock")

    @contextlib.contextmanager
    def locked(self, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the node-wide IPAM lock (released by the kernel if the process dies)."""
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise CniError(ERR_IO, f"{self.lock_path}: cannot open IPAM lock: {exc.strerror}") from None
        try:
            if threading.current_thread() is threading.main_thread():
                self._wait_blocking(fd, timeout)
            else:
                self._wait_polling(fd, timeout)
            yield
        finally:
            os.close(fd)

    def _timed_out(self, timeout: float) -> CniError:
        return CniError(ERR_TRY_AGAIN_LATER, f"{self.lock_path}: IPAM lock held by another invocation for {timeout:.0f}s")

    def _wait_blocking(self, fd: int, timeout: float) -> None:
        """Sleep in the kernel until the lock is ours (woken the moment it is released), with
        SIGALRM as the deadline: the plugin's main thread."""
        def expire(_signum: int, _frame: object) -> None:
            raise self._timed_out(timeout)

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise CniError(ERR_IO, f"{self.lock_path}: flock: {exc.strerror}") from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def _wait_polling(self, fd: int, timeout: float) -> None:
        """Other threads (no signals there): poll with backoff and jitter."""
        deadline = time.monotonic() + timeout
        pause = LOCK_POLL_MIN_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise CniError(ERR_IO, f"{self.lock_path}: flock: {exc.strerror}") from None
                if time.monotonic() > deadline:
                    raise self._timed_out(timeout) from None
                time.sleep(pause * random.uniform(0.5, 1.5))
                pause = min(pause * 2, LOCK_POLL_MAX_S)

    def _remove_leftovers(self) -> None:
        for name in os.listdir(self.dir):
            if name.startswith(TEMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.dir, name))

    def read(self) -> State:
        try:
            with open(self.state_path, encoding="utf-8") as f:
                return State.from_json(f.read(), self.state_path)
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise CniError(ERR_IO, f"{self.state_path}: cannot read IPAM state: {exc.strerror}") from None

    def write(self, state: State) -> None:
        """Replace the state file atomically and durably (with the lock held). Temporary files
        of writers killed before their rename are removed first: only the lock's holder writes,
        so any that exist now are such leftovers."""
        try:
            self._remove_leftovers()
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.dir)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(state.to_json())
                    f.flush()
                    os.fsync(f.fileno())
                os.rename(tmp, self.state_path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            dir_fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise CniError(ERR_IO, f"{self.state_path}: cannot write IPAM state: {exc.strerror}") from None


def node_ipam_records(node: str, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The node's assignments as felix's ``/ipam`` serves them and ``calyxctl ipam`` reads them:
    ``{"node", "allocations": [...]}`` (the entries of ``state.json``). Read without the lock:
    the file is only ever replaced whole, so a reader sees the old or the new state."""
    state = AddressStore(str(run_dir)).read()
    return {"node": node, "allocations": [a.to_json() for a in state.allocations]}


def assign(store: AddressStore, connect: Callable[[], CidrSource], *, container_id: str, ifname: str,
           namespace: str, pod: str, host_ifname: str, cache_ttl: float = CACHE_TTL_S,
           now: Callable[[], float] = clock_now) -> Allocation:
    """Give the pod interface an address, or return the one it already holds (ADD retried).

    Allocates from the cached CIDRs while they are fresh; otherwise (or when they are full)
    calls ``connect()`` for the API-backed source, asks it for the node's CIDRs (claiming
    another block when those are full too) and refreshes the cache. Must be called with the
    store's lock held.
    """
    state = store.read()
    existing = state.find(container_id, ifname)
    if existing is not None:
        return existing
    used = state.used()
    address = None
    if state.cache_is_fresh(now(), cache_ttl):
        address = pick_address(state.cidrs, used | {reserved_address(c) for c in state.cidrs})
    if address is None:
        asked_at = now()        # before the API is read: the cache's age errs on the safe side
        source = connect()
        node_cidrs = source.current()
        address = pick_address(node_cidrs, used | {reserved_address(c) for c in node_cidrs})
        while address is None:
            more = source.claim_more()
            if more in node_cidrs:
                raise CniError(ERR_INVALID_CONFIG, f"IPAM: block {more} claimed twice for this node")
            node_cidrs = node_cidrs + (more,)
            address = pick_address((more,), used | {reserved_address(more)})
        state = state.with_cidrs(node_cidrs, asked_at)
    alloc = Allocation(address=address, container_id=container_id, ifname=ifname,
                       namespace=namespace, pod=pod, host_ifname=host_ifname)
    store.write(state.with_allocation(alloc))
    return alloc


def release(store: AddressStore, *, container_id: str, ifname: str) -> Allocation | None:
    """Free the address of a pod interface; unknown containers are not an error (DEL is idempotent).

    Must be called with the store's lock held.
    """
    state = store.read()
    existing = state.find(container_id, ifname)
    if existing is not None:
        store.write(state.without(container_id, ifname))
    return existing


def release_held(store: AddressStore, allocations: Sequence[Allocation]) -> list[Allocation]:
    """Free each allocation that is still recorded exactly as given (same container, interface
    and address); returns those freed. One write for all. The leak collector's release: an
    allocation re-made or released since it was read is left alone.

    Must be called with the store's lock held.
    """
    state = store.read()
    freed = [a for a in allocations if state.find(a.container_id, a.ifname) == a]
    if freed:
        for a in freed:
            state = state.without(a.container_id, a.ifname)
        store.write(state)
    return freed
