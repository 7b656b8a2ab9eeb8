"""The lab kubelet's sync loop for one node.

Every tick (half a second) it compares the pods the API binds to the node with what runs:
new hostNetwork pods get their volumes and then their init containers, one after the other,
then their containers; exited containers are restarted after kubelet's back-off
(:mod:`.backoff`); HTTP probes decide readiness and, for startup and liveness, a restart
(liveness and readiness are probed only once the startup probe has passed); pods marked for
deletion are stopped (SIGTERM, their grace period, SIGKILL) and then removed from the API;
the pod's status is written whenever it changes, and the node's Lease is renewed every
10 seconds. The pod list is re-read when a watch reports a change, and every 10 seconds.
"""
from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from calyxlab.kubelet import backoff as backoff_mod
from calyxlab.kubelet.podspec import ContainerPlan, HttpProbe, PodPlan, PodSpecError, parse_pod
from calyxlab.kubelet.records import ContainerRecord, Records
from calyxlab.kubelet.runtime import ContainerRuntime, now_rfc3339
from calyxlab.kubelet.status import ContainerState, Exit, pod_status
from calyxlab.kubelet.volumes import VolumeManager, VolumeNotReady, VolumeSource

log = logging.getLogger("calyxlab.kubelet")

TICK = 0.5
RELIST_EVERY = 10.0
LEASE_EVERY = 10.0
LEASE_SECONDS = 40
LEASE_NAMESPACE = "kube-node-lease"


@dataclass
class ProbeState:
    next_at: float
    failures: int = 0
    successes: int = 0


@dataclass
class Container:
    """One container of a pod and what the kubelet knows of it."""

    plan: ContainerPlan
    record: ContainerRecord | None = None       # the running process, if any
    restart_count: int = 0
    backoff: backoff_mod.Backoff = field(default_factory=backoff_mod.Backoff)
    next_start: float = 0.0
    last_exit: Exit | None = None
    completed: Exit | None = None
    ready: bool = False
    readiness: ProbeState | None = None
    liveness: ProbeState | None = None
    startup: ProbeState | None = None
    started: bool = False                       # the startup probe has passed (or there is none)
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""

    def state(self) -> ContainerState:
        running = self.record is not None
        return ContainerState(
            name=self.plan.name, image=self.plan.image, restart_count=self.restart_count,
            running_since=self.record.started_at if running else None, started=running and self.started,
            container_id=f"calyx-lab://{self.record.pid}" if running else None,
            ready=running and self.ready, waiting_reason=self.waiting_reason,
            waiting_message=self.waiting_message, last_exit=self.last_exit,
            completed=self.completed)


@dataclass
class PodWorker:
    plan: PodPlan
    init: list[Container]
    main: list[Container]
    start_time: str
    sources: dict[str, VolumeSource] | None = None
    volume_error: str = ""
    last_status: dict[str, Any] | None = None


class NodeKubelet:
    def __init__(self, *, node: str, host_ip: str, core, coordination, runtime: ContainerRuntime,
                 volumes: VolumeManager, records: Records, log_dir: Path,
                 claim_mount_points: Callable[[list[str]], None] = lambda paths: None,
                 clock: Callable[[], float] = time.time):
        self.claim_mount_points = claim_mount_points
        self.node = node
        self.host_ip = host_ip
        self.core = core
        self.coordination = coordination
        self.runtime = runtime
        self.volumes = volumes
        self.records = records
        self.log_dir = log_dir
        self.clock = clock
        self.pods: dict[str, PodWorker] = {}
        self.bad_pods: dict[str, str] = {}          # uid -> why it cannot run (logged once)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_list = 0.0
        self._last_lease = 0.0

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        threading.Thread(target=self._watch, name="pod-watch", daemon=True).start()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:       # one bad tick must not stop the node's pods being looked after
                log.exception("kubelet tick failed; retrying")
            self._wake.wait(TICK)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _watch(self) -> None:
        from kubernetes import watch
        while not self._stop.is_set():
            try:
                stream = watch.Watch().stream(self.core.list_pod_for_all_namespaces,
                                              field_selector=f"spec.nodeName={self.node}",
                                              timeout_seconds=60)
                for _ in stream:
                    self._last_list = 0.0
                    self._wake.set()
            except Exception as exc:
                log.debug("pod watch ended (%s); re-watching", exc)
                time.sleep(1.0)

    def tick(self) -> None:
        now = self.clock()
        self._wake.clear()
        if now - self._last_lease >= LEASE_EVERY:
            self._renew_lease()
            self._last_lease = now
        if now - self._last_list >= RELIST_EVERY:
            self._resync_pods()
            self._last_list = now
        for uid in list(self.pods):
            self._sync_pod(self.pods[uid])

    # ------------------------------------------------------------------ pods from the API
    def _resync_pods(self) -> None:
        resp = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node}",
                                                     _preload_content=False)
        seen = set()
        for obj in json.loads(resp.data).get("items", []):
            uid = obj["metadata"]["uid"]
            if not (obj.get("spec") or {}).get("hostNetwork"):
                continue                     # a pod with its own sandbox: the lab's pod commands
            seen.add(uid)
            try:
                plan = parse_pod(obj, self.host_ip)
            except PodSpecError as exc:
                if self.bad_pods.get(uid) != str(exc):
                    log.error("cannot run pod: %s", exc)
                    self.bad_pods[uid] = str(exc)
                continue
            worker = self.pods.get(uid)
            if worker is None:
                self.pods[uid] = self._new_worker(plan, obj)
                log.info("pod %s: bound to this node; starting it", plan.ref)
            else:
                worker.plan = plan
        for uid in list(self.pods):
            if uid not in seen:
                worker = self.pods.pop(uid)
                log.info("pod %s: gone from the API; stopping its containers", worker.plan.ref)
                self._stop_all(worker, worker.plan.grace_seconds)
                self.volumes.forget(uid)

    def _new_worker(self, plan: PodPlan, obj: dict) -> PodWorker:
        start = (obj.get("status") or {}).get("startTime") or now_rfc3339()
        worker = PodWorker(plan, [Container(c) for c in plan.init_containers],
                           [Container(c) for c in plan.containers], start)
        for c in worker.init + worker.main:
            self._adopt(worker, c)
        return worker

    def _adopt(self, worker: PodWorker, c: Container) -> None:
        """Take over a process a previous run of this kubelet started."""
        record = self.records.containers.get(Records.key(worker.plan.uid, c.plan.name))
        if record is None:
            return
        c.restart_count = record.restart_count
        if self.runtime.alive(record.pid, record.start_time):
            c.record = record
            c.next_start = 0.0
            self._arm_probes(c, record.started_wall)
            log.info("pod %s: container %s: adopted running process %d", worker.plan.ref,
                     c.plan.name, record.pid)
        else:
            self._exited(worker, c, record)

    # ------------------------------------------------------------------ one pod
    def _sync_pod(self, worker: PodWorker) -> None:
        plan = worker.plan
        if plan.deleting:
            grace = plan.deletion_grace_seconds if plan.deletion_grace_seconds is not None \
                else plan.grace_seconds
            log.info("pod %s: being deleted; stopping its containers (grace %s s)", plan.ref, grace)
            self._stop_all(worker, grace)
            self._finish_deletion(plan)
            self.pods.pop(plan.uid, None)
            self.volumes.forget(plan.uid)
            return
        if worker.sources is None or self.volumes.needs_renewal(plan.uid):
            try:
                worker.sources = self.volumes.setup(plan)
                worker.volume_error = ""
            except (VolumeNotReady, OSError) as exc:
                if worker.volume_error != str(exc):
                    log.warning("pod %s: volumes not ready: %s", plan.ref, exc)
                worker.volume_error = str(exc)
        if worker.sources is not None:
            if self._sync_init(worker):
                for c in worker.main:
                    self._sync_container(worker, c)
        self._report(worker)

    def _sync_init(self, worker: PodWorker) -> bool:
        """Run the init containers in order; True once all have succeeded."""
        for c in worker.init:
            if c.completed is not None and c.completed.exit_code == 0:
                continue
            self._sync_container(worker, c)
            return False
        return True

    def _sync_container(self, worker: PodWorker, c: Container) -> None:
        now = self.clock()
        if c.record is not None and not self.runtime.alive(c.record.pid, c.record.start_time):
            self._exited(worker, c, c.record)
        if c.record is None:
            if c.completed is not None and c.plan.init and c.completed.exit_code == 0:
                return
            if now >= c.next_start:
                self._start(worker, c)
            return
        self._probe(worker, c, now)

    def _start(self, worker: PodWorker, c: Container) -> None:
        plan = worker.plan
        self.claim_mount_points(self.runtime.mount_points(c.plan))
        log_file = self.log_dir / f"{plan.namespace}_{plan.name}_{c.plan.name}.log"
        started = self.runtime.start(plan, c.plan, worker.sources or {},
                                     self.volumes.pod_dir(plan.uid), log_file)
        if started.start_time < 0:
            log.warning("pod %s: container %s exited at once (log %s)", plan.ref, c.plan.name, log_file)
        c.record = ContainerRecord(plan.uid, plan.ref, c.plan.name, started.pid, started.start_time,
                                   started.started_at, started.started_wall, c.restart_count,
                                   started.exit_file)
        self.records.put(c.record)
        c.completed = None
        c.waiting_reason, c.waiting_message = "ContainerCreating", ""
        self._arm_probes(c, started.started_wall)
        log.info("pod %s: container %s started (pid %d, restart %d): %s", plan.ref, c.plan.name,
                 started.pid, c.restart_count, " ".join(c.plan.argv))

    def _arm_probes(self, c: Container, started_wall: float) -> None:
        p = c.plan
        c.startup = ProbeState(started_wall + p.startup.initial_delay) if p.startup else None
        c.started = p.startup is None
        c.readiness = ProbeState(started_wall + p.readiness.initial_delay) if p.readiness else None
        c.liveness = ProbeState(started_wall + p.liveness.initial_delay) if p.liveness else None
        c.ready = p.readiness is None

    def _exited(self, worker: PodWorker, c: Container, record: ContainerRecord) -> None:
        code = self.runtime.exit_code(record.exit_file)
        finished = self.runtime.exit_wall(record.exit_file)
        ended = Exit(code, record.started_at, now_rfc3339(finished))
        c.record = None
        c.ready = False
        self.records.drop(worker.plan.uid, c.plan.name)
        if c.plan.init and code == 0:
            c.completed = ended
            log.info("pod %s: init container %s completed", worker.plan.ref, c.plan.name)
            return
        c.last_exit = ended
        c.restart_count += 1
        c.backoff = c.backoff.after_exit(max(0.0, finished - record.started_wall))
        c.next_start = self.clock() + c.backoff.delay
        c.waiting_reason = "CrashLoopBackOff"
        c.waiting_message = (f"back-off {c.backoff.delay:.0f}s restarting failed container="
                             f"{c.plan.name} pod={worker.plan.name}_{worker.plan.namespace}")
        log.warning("pod %s: container %s exited with %d after %.0f s; restarting in %.0f s "
                    "(restart %d)", worker.plan.ref, c.plan.name, code,
                    finished - record.started_wall, c.backoff.delay, c.restart_count)

    # ------------------------------------------------------------------ probes
    def _probe(self, worker: PodWorker, c: Container, now: float) -> None:
        """Startup probe first; liveness and readiness only once it has passed."""
        assert c.record is not None
        if not c.started:
            ok = self._probe_if_due(c.startup, c.plan.startup, now)
            if ok:
                c.started = True
                if c.liveness and c.plan.liveness:
                    c.liveness.next_at = now + c.plan.liveness.initial_delay
                if c.readiness:
                    c.readiness.next_at = now
            elif ok is False and c.startup.failures >= c.plan.startup.failure_threshold:
                self._restart_unhealthy(worker, c, "startup", c.startup.failures)
            return
        if self._probe_if_due(c.liveness, c.plan.liveness, now) is False \
                and c.liveness.failures >= c.plan.liveness.failure_threshold:
            self._restart_unhealthy(worker, c, "liveness", c.liveness.failures)
            return
        ok = self._probe_if_due(c.readiness, c.plan.readiness, now)
        if ok and c.readiness.successes >= c.plan.readiness.success_threshold:
            c.ready = True
        elif ok is False and c.readiness.failures >= c.plan.readiness.failure_threshold:
            c.ready = False

    def _probe_if_due(self, state: ProbeState | None, probe: HttpProbe | None, now: float) -> bool | None:
        """Probe when due and count the result; None when there is no such probe or it is not due."""
        if state is None or probe is None or now < state.next_at:
            return None
        ok = self._http_ok(probe)
        self._count(state, probe, ok, now)
        return ok

    def _restart_unhealthy(self, worker: PodWorker, c: Container, probe: str, failures: int) -> None:
        log.warning("pod %s: container %s failed its %s probe %d times; restarting it",
                    worker.plan.ref, c.plan.name, probe, failures)
        record = c.record
        assert record is not None
        self.runtime.stop(record.pid, record.start_time, worker.plan.grace_seconds)
        self._exited(worker, c, record)

    @staticmethod
    def _count(state: ProbeState, probe: HttpProbe, ok: bool, now: float) -> None:
        if ok:
            state.successes, state.failures = state.successes + 1, 0
        else:
            state.successes, state.failures = 0, state.failures + 1
        state.next_at = now + probe.period

    def _http_ok(self, probe: HttpProbe) -> bool:
        status, _error = self.runtime.backend.http_get(self.runtime.names.namespace(self.node),
                                                       probe.host, probe.port, probe.path,
                                                       probe.timeout)
        return status is not None and 200 <= status < 400

    # ------------------------------------------------------------------ stopping
    def _stop_all(self, worker: PodWorker, grace: float) -> None:
        for c in worker.main + worker.init:
            if c.record is not None:
                self.runtime.stop(c.record.pid, c.record.start_time, grace)
                self.records.drop(worker.plan.uid, c.plan.name)
                c.record = None

    def _finish_deletion(self, plan: PodPlan) -> None:
        from kubernetes import client as k8s
        from kubernetes.client.exceptions import ApiException
        try:
            self.core.delete_namespaced_pod(plan.name, plan.namespace, body=k8s.V1DeleteOptions(
                grace_period_seconds=0, preconditions=k8s.V1Preconditions(uid=plan.uid)))
            log.info("pod %s: containers stopped; pod deleted", plan.ref)
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("pod %s: final delete failed: %s %s", plan.ref, exc.status, exc.reason)

    # ------------------------------------------------------------------ reporting
    def _report(self, worker: PodWorker) -> None:
        from kubernetes.client.exceptions import ApiException
        init = [c.state() for c in worker.init]
        main = [c.state() for c in worker.main]
        if worker.volume_error and worker.sources is None:
            main = [ContainerState(s.name, s.image, s.restart_count, waiting_reason="ContainerCreating",
                                   waiting_message=worker.volume_error) for s in main]
        status = pod_status(worker.plan, init, main, self.host_ip, worker.start_time)
        if status == worker.last_status:
            return
        try:
            self.core.patch_namespaced_pod_status(worker.plan.name, worker.plan.namespace,
                                                  {"status": status})
            worker.last_status = status
        except ApiException as exc:
            log.warning("pod %s: status update failed: %s %s", worker.plan.ref, exc.status, exc.reason)

    def _renew_lease(self) -> None:
        from kubernetes import client as k8s
        from kubernetes.client.exceptions import ApiException
        now = datetime.datetime.now(datetime.timezone.utc)
        body = k8s.V1Lease(metadata=k8s.V1ObjectMeta(name=self.node, namespace=LEASE_NAMESPACE),
                           spec=k8s.V1LeaseSpec(holder_identity=self.node,
                                                lease_duration_seconds=LEASE_SECONDS, renew_time=now))
        try:
            try:
                self.coordination.replace_namespaced_lease(self.node, LEASE_NAMESPACE, self._with_version(body))
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self.coordination.create_namespaced_lease(LEASE_NAMESPACE, body)
        except ApiException as exc:
            log.warning("node %s: Lease renewal failed: %s %s", self.node, exc.status, exc.reason)

    def _with_version(self, body):
        current = self.coordination.read_namespaced_lease(self.node, LEASE_NAMESPACE)
        body.metadata.resource_version = current.metadata.resource_version
        return body
