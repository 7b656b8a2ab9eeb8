"""The Kubernetes resources Calyx reads and writes, and generic list/watch/get/create/patch/
delete helpers over them.

Core kinds go through ``CoreV1Api``, the others (Calyx's own kinds, group ``calyx.dev``, and
EndpointSlices, ``discovery.k8s.io``) through ``CustomObjectsApi``; callers pass a :class:`Resource` and get plain dicts back either way
(responses are read unparsed and decoded as JSON, so no model classes are built).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from calyx import model

# (connect, read) seconds for every ordinary request: an unreachable API fails fast.
REQUEST_TIMEOUT = (5.0, 30.0)
MERGE_PATCH = "application/merge-patch+json"
LIST_PAGE_SIZE = 500       # objects per list request (client-go's reflector pages by 500 too)
GONE = 410

RawObject = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str          # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def is_core(self) -> bool:
        return self.group == ""

    @property
    def snake_kind(self) -> str:
        """``Pod`` -> ``pod``, ``BGPPeer`` -> ``bgp_peer``: the CoreV1Api method suffix."""
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", self.kind).lower()

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


PODS = Resource("", "v1", "pods", "Pod", True)
NODES = Resource("", "v1", "nodes", "Node", False)
SECRETS = Resource("", "v1", "secrets", "Secret", True)
EVENTS = Resource("", "v1", "events", "Event", True)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False)
IPPOOLS = Resource(model.GROUP, model.VERSION, "ippools", "IPPool", False)
BGPCONFIGURATIONS = Resource(model.GROUP, model.VERSION, "bgpconfigurations", "BGPConfiguration", False)
BGPPEERS = Resource(model.GROUP, model.VERSION, "bgppeers", "BGPPeer", False)
IPAMBLOCKS = Resource(model.GROUP, model.VERSION, "ipamblocks", "IPAMBlock", False)
SERVICES = Resource("", "v1", "services", "Service", True)
ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True)
NETWORKPOLICIES = Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True)

ALL = (PODS, NODES, SECRETS, EVENTS, NAMESPACES, IPPOOLS, BGPCONFIGURATIONS, BGPPEERS, IPAMBLOCKS, SERVICES,
       ENDPOINTSLICES, NETWORKPOLICIES)

# Also reachable as ``Resource.PODS`` etc., the spelling docs/architecture.md uses.
for _name in ("PODS", "NODES", "SECRETS", "EVENTS", "NAMESPACES", "IPPOOLS", "BGPCONFIGURATIONS", "BGPPEERS", "IPAMBLOCKS",
              "SERVICES", "ENDPOINTSLICES", "NETWORKPOLICIES"):
    setattr(Resource, _name, globals()[_name])
del _name


@dataclass(frozen=True)
class ObjectList:
    items: list[RawObject]
    resource_version: str


def object_key(obj: RawObject) -> tuple[str, str]:
    """(namespace or "", name): the identity of an object within one resource."""
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def resource_version_of(obj: RawObject) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def with_type(resource: Resource, obj: RawObject) -> RawObject:
    """List items come without kind/apiVersion; give them back so parsers see whole objects."""
    obj.setdefault("kind", resource.kind)
    obj.setdefault("apiVersion", resource.api_version)
    return obj


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def trimmed(obj: RawObject) -> RawObject:
    """``obj`` without what no Calyx component reads and can be large: the API server's
    ``metadata.managedFields``, kubectl's last-applied copy of the whole object, and a Node's
    list of container images (``status.images``, often the biggest part of a Node). Caches hold
    objects trimmed, as client-go informers with a transform do: an IPAMBlock then costs about
    a third of the memory. Changes ``obj`` in place."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict) and LAST_APPLIED in annotations:
            del annotations[LAST_APPLIED]
    status = obj.get("status")
    if obj.get("kind") == "Node" and isinstance(status, dict):
        status.pop("images", None)
    return obj


def _decode(response: Any) -> Any:
    data = response.data
    return json.loads(data) if data else {}


def _scope_args(resource: Resource, namespace: str | None) -> tuple[str, dict[str, Any]]:
    """('namespaced_' | '' | 'cluster_' style method infix, path kwargs) for the call."""
    if resource.namespaced and namespace:
        return "namespaced", {"namespace": namespace}
    if resource.namespaced and not resource.is_core:
        return "all", {}
    return "cluster", {}


def _list_call(api: kubernetes.client.ApiClient, resource: Resource,
               namespace: str | None) -> Callable[..., Any]:
    """The client function that lists (and, with watch=True, watches) the resource."""
    scope, path = _scope_args(resource, namespace)
    if resource.is_core:
        core = kubernetes.client.CoreV1Api(api)
        if scope == "namespaced":
            fn = getattr(core, f"list_namespaced_{resource.snake_kind}")
        elif resource.namespaced:
            fn = getattr(core, f"list_{resource.snake_kind}_for_all_namespaces")
        else:
            fn = getattr(core, f"list_{resource.snake_kind}")
        return lambda **kw: fn(**path, **kw)
    custom = kubernetes.client.CustomObjectsApi(api)
    common = {"group": resource.group, "version": resource.version}
    if scope == "namespaced":
        return lambda **kw: custom.list_namespaced_custom_object(plural=resource.plural, **common, **path, **kw)
    if scope == "all":
        return lambda **kw: custom.list_custom_object_for_all_namespaces(resource_plural=resource.plural,
                                                                         **common, **kw)
    return lambda **kw: custom.list_cluster_custom_object(plural=resource.plural, **common, **kw)


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    args: dict[str, str] = {}
    if label_selector:
        args["label_selector"] = label_selector
    if field_selector:
        args["field_selector"] = field_selector
    return args


def list_objects(api: kubernetes.client.ApiClient, resource: Resource, namespace: str | None = None,
                 label_selector: str | None = None, field_selector: str | None = None,
                 page_size: int = LIST_PAGE_SIZE,
                 each: Callable[[RawObject], RawObject] | None = None) -> ObjectList:
    """All matching objects and the list's resourceVersion (to start a watch from).

    Read in pages of ``page_size`` objects (``limit`` and ``continue``, one consistent snapshot
    of the collection, as client-go's reflector lists; 0: one request), and ``each`` applied to
    every object as its page arrives: a big collection is never held whole as raw objects, only
    in the form the caller keeps. A continue token the server no longer honours (410, after an
    etcd compaction during a long list) starts the list again in one request."""
    call = _list_call(api, resource, namespace)
    selectors = _selectors(label_selector, field_selector)
    items: list[RawObject] = []
    resource_version, token = "", ""
    while True:
        paging: dict[str, Any] = {"limit": page_size} if page_size else {}
        if token:
            paging["_continue"] = token
        try:
            response = call(_preload_content=False, _request_timeout=REQUEST_TIMEOUT, **selectors, **paging)
        except ApiException as exc:
            if exc.status == GONE and token:
                return list_objects(api, resource, namespace, label_selector, field_selector, 0, each)
            raise
        body = _decode(response)
        for item in body.pop("items", None) or []:
            item = with_type(resource, item)
            items.append(each(item) if each is not None else item)
        meta = body.get("metadata") or {}
        resource_version = str(meta.get("resourceVersion") or resource_version)
        token = str(meta.get("continue") or "")
        if not token:
            return ObjectList(items, resource_version)


def open_watch(api: kubernetes.client.ApiClient, resource: Resource, resource_version: str,
               timeout_seconds: int, namespace: str | None = None, label_selector: str | None = None,
               field_selector: str | None = None) -> Any:
    """Start a watch from ``resource_version`` (bookmarks requested); returns the open streaming
    response (a urllib3 response: iterate it with :func:`iter_watch_events`, close it to stop).

    The read timeout exceeds the server-side ``timeout_seconds``, so a silently dead
    connection is noticed while a quiet but healthy watch is not cut short."""
    return _list_call(api, resource, namespace)(
        watch=True, resource_version=resource_version, allow_watch_bookmarks=True,
        timeout_seconds=int(timeout_seconds), _preload_content=False,
        _request_timeout=(REQUEST_TIMEOUT[0], float(timeout_seconds) + 30.0),
        **_selectors(label_selector, field_selector))


def iter_watch_events(response: Any) -> Iterator[tuple[str, RawObject]]:
    """(type, object) for each line of a watch stream; blank keep-alive lines are skipped."""
    for line in iter_resp_lines(response):
        if not line.strip():
            continue
        event = json.loads(line)
        yield str(event.get("type") or ""), event.get("object") or {}


def _object_fn(api: kubernetes.client.ApiClient, resource: Resource, verb: str,
               namespace: str | None) -> Callable[..., Any]:
    """read/create/patch/delete for one resource, core or custom, as a uniform callable."""
    if resource.namespaced and not namespace:
        raise ValueError(f"{resource}: namespaced resource needs a namespace for {verb}")
    if resource.is_core:
        core = kubernetes.client.CoreV1Api(api)
        core_verb = "read" if verb == "get" else verb
        if resource.namespaced:
            fn = getattr(core, f"{core_verb}_namespaced_{resource.snake_kind}")
            return lambda **kw: fn(namespace=namespace, **kw)
        return getattr(core, f"{core_verb}_{resource.snake_kind}")
    custom = kubernetes.client.CustomObjectsApi(api)
    common = {"group": resource.group, "version": resource.version, "plural": resource.plural}
    if resource.namespaced:
        fn = getattr(custom, f"{verb}_namespaced_custom_object")
        return lambda **kw: fn(namespace=namespace, **common, **kw)
    fn = getattr(custom, f"{verb}_cluster_custom_object")
    return lambda **kw: fn(**common, **kw)


def get_object(api: kubernetes.client.ApiClient, resource: Resource, name: str,
               namespace: str | None = None) -> RawObject:
    response = _object_fn(api, resource, "get", namespace)(name=name, _preload_content=False,
                                                          _request_timeout=REQUEST_TIMEOUT)
    return with_type(resource, _decode(response))


def create_object(api: kubernetes.client.ApiClient, resource: Resource, body: RawObject,
                  namespace: str | None = None) -> RawObject:
    body = with_type(resource, dict(body))
    ns = namespace or (body.get("metadata") or {}).get("namespace")
    response = _object_fn(api, resource, "create", ns if resource.namespaced else None)(
        body=body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
    return with_type(resource, _decode(response))


def patch_object(api: kubernetes.client.ApiClient, resource: Resource, name: str, patch: RawObject,
                 namespace: str | None = None) -> RawObject:
    """JSON merge patch (RFC 7386) of one object."""
    response = _object_fn(api, resource, "patch", namespace)(
        name=name, body=patch, _content_type=MERGE_PATCH, _preload_content=False,
        _request_timeout=REQUEST_TIMEOUT)
    return with_type(resource, _decode(response))


def delete_object(api: kubernetes.client.ApiClient, resource: Resource, name: str,
                  namespace: str | None = None) -> None:
    _object_fn(api, resource, "delete", namespace)(name=name, _preload_content=False,
                                                   _request_timeout=REQUEST_TIMEOUT)
