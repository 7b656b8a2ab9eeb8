"""The HTTP side of the emulator: aiohttp routes for discovery, OpenAPI, health and every verb
on every served resource (list, watch, get, create, update, patch, delete, deletecollection,
and the status subresource), with Kubernetes semantics for versions, finalizers and errors.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import yaml
from aiohttp import web

from calyx.observability import get_logger
from calyxlab.apiserver import discovery, patching, protobuf, semantics, tables
from calyxlab.apiserver.errors import (APIError, already_exists, bad_request, gone, method_not_allowed,
                                       not_found, resource_version_too_large, unsupported_media_type)
from calyxlab.apiserver.resources import CRD_TYPE, Registry, ResourceType, from_crd
from calyxlab.apiserver.selectors import parse_field_selector, parse_label_selector
from calyxlab.apiserver.store import Store, Watcher
from calyxlab.apiserver.validation import validate_builtin, validate_custom

LOG = get_logger("calyxlab.apiserver")
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
_LIVENESS_CHECK = 5.0       # seconds: how often a quiet watch checks that its client is still there


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=_dumps(body), content_type="application/json")


@dataclass(frozen=True)
class Target:
    """What a resource URL addresses."""

    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass(frozen=True)
class Settings:
    history: int = 1000
    bookmark_interval: float = 5.0
    watch_queue_limit: int = 100_000


class APIServer:
    """The emulated API: registry of kinds, versioned store, and the aiohttp application."""

    def __init__(self, crds: list[dict[str, Any]], settings: Settings = Settings()):
        self.settings = settings
        self.registry = Registry()
        self.store = Store(history=settings.history, watch_queue_limit=settings.watch_queue_limit)
        now = self._now()
        ns_type = self.registry.lookup("", "v1", "namespaces")
        assert ns_type is not None
        for name in DEFAULT_NAMESPACES:
            self._create(ns_type, {"metadata": {"name": name}}, None, now, dry_run=False)
        for crd in crds:
            self._create(CRD_TYPE, crd, None, now, dry_run=False)

    # ---------------------------------------------------------------------------------------
    # application

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/version", self._version)
        for path in ("/livez", "/readyz", "/healthz"):
            app.router.add_get(path, self._healthy)
        app.router.add_get("/api", self._api)
        app.router.add_get("/apis", self._apis)
        app.router.add_get("/apis/{group}", self._api_group)
        app.router.add_get("/openapi/v3", self._openapi_v3_root)
        app.router.add_get("/openapi/v3/{gv:.+}", self._openapi_v3)
        app.router.add_route("*", "/api/{version}", self._resource_or_discovery)
        app.router.add_route("*", "/api/{version}/{rest:.+}", self._resource_or_discovery)
        app.router.add_route("*", "/apis/{group}/{version}", self._resource_or_discovery)
        app.router.add_route("*", "/apis/{group}/{version}/{rest:.+}", self._resource_or_discovery)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        try:
            return await handler(request)
        except APIError as err:
            if err.code >= 500:
                LOG.error("request failed", method=request.method, path=request.path, code=err.code,
                          message=err.message)
            return _json_response(err.status(), err.code)
        except web.HTTPException as exc:
            if exc.status == 404:
                return _json_response(APIError(404, "NotFound", "the server could not find the requested "
                                               "resource").status(), 404)
            raise
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as exc:  # a defect here must still answer as the API does
            LOG.error("internal error", exc_info=True, method=request.method, path=request.path)
            return _json_response(APIError(500, "InternalError", f"Internal error occurred: {exc!r}")
                                  .status(), 500)

    @staticmethod
    def _now() -> datetime:
        return datetime.now(timezone.utc)

    async def _version(self, request: web.Request) -> web.Response:
        return _json_response(discovery.KUBERNETES_VERSION)

    async def _healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _apis(self, request: web.Request) -> web.Response:
        return _json_response(discovery.api_group_list(self.registry))

    async def _openapi_v3_root(self, request: web.Request) -> web.Response:
        return _json_response(discovery.openapi_v3_root(self.registry))

    async def _api(self, request: web.Request) -> web.Response:
        return _json_response(discovery.api_versions(request.host))

    async def _api_group(self, request: web.Request) -> web.Response:
        doc = discovery.api_group(self.registry, request.match_info["group"])
        if doc is None:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        return _json_response(doc)

    async def _openapi_v3(self, request: web.Request) -> web.Response:
        doc = discovery.openapi_v3_document(self.registry, request.match_info["gv"])
        if doc is None:
            raise APIError(404, "NotFound", f"OpenAPI document {request.match_info['gv']!r} not found")
        return _json_response(doc)

    # ---------------------------------------------------------------------------------------
    # routing

    async def _resource_or_discovery(self, request: web.Request) -> web.StreamResponse:
        group = request.match_info.get("group", "")
        version = request.match_info["version"]
        rest = request.match_info.get("rest")
        if rest is None:
            doc = discovery.api_resource_list(self.registry, group, version)
            if doc is None or request.method != "GET":
                raise APIError(404, "NotFound", "the server could not find the requested resource")
            return _json_response(doc)
        target = self._target(group, version, rest)
        method = request.method
        if method == "GET":
            if target.name is None:
                if _flag(request.query.get("watch")):
                    return await self._watch(request, target)
                return self._list(request, target)
            return self._get(request, target)
        if method == "POST" and target.name is None and target.subresource is None:
            return await self._post(request, target)
        if target.name is not None and method == "PUT":
            return await self._put(request, target)
        if target.name is not None and method == "PATCH":
            return await self._patch(request, target)
        if method == "DELETE" and target.subresource is None:
            body = await _read_body(request, allow_empty=True)
            if target.name is None:
                return self._delete_collection(request, target)
            return self._delete(request, target, body or {})
        raise method_not_allowed(f"{method} is not supported on {request.path}")

    def _target(self, group: str, version: str, rest: str) -> Target:
        segments = rest.strip("/").split("/")
        namespace = None
        if len(segments) >= 3 and segments[0] == "namespaces" and segments[2] not in ("status", "finalize"):
            namespace, segments = segments[1], segments[2:]
        if len(segments) > 3:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        rtype = self.registry.lookup(group, version, segments[0])
        if rtype is None:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        name = segments[1] if len(segments) > 1 else None
        sub = segments[2] if len(segments) > 2 else None
        if (namespace is not None and not rtype.namespaced) or (sub is not None and (
                sub != "status" or not rtype.has_status)):
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        if name is not None and rtype.namespaced and namespace is None:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        return Target(rtype, namespace, name, sub)

    # ---------------------------------------------------------------------------------------
    # reads

    def _existing(self, target: Target) -> dict[str, Any]:
        assert target.name is not None
        obj = self.store.get(target.rtype.key, target.namespace, target.name)
        if obj is None:
            raise not_found(target.rtype.plural, target.name, target.rtype.group)
        return obj

    def _get(self, request: web.Request, target: Target) -> web.Response:
        obj = _as_version(self._existing(target), target.rtype)
        if _wants_table(request):
            return _json_response(tables.table(target.rtype, [obj], {"resourceVersion": obj["metadata"][
                "resourceVersion"]}, request.query.get("includeObject", "Metadata"), self._now()))
        return _json_response(obj)

    def _list(self, request: web.Request, target: Target) -> web.Response:
        rtype, query = target.rtype, request.query
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), rtype.kind)
        continue_token = query.get("continue")
        after: tuple[str, str] | None = None
        rv_param, rv_match = query.get("resourceVersion", ""), query.get("resourceVersionMatch", "")
        if continue_token:
            at, after = _decode_continue(continue_token)
            try:
                objects = self.store.list_at(rtype.key, at)
            except APIError as err:
                raise gone("The provided continue parameter is too old to display a consistent list "
                           "result. You can start a new list without the continue parameter.") from err
            list_rv = at
        elif rv_match == "Exact":
            list_rv = _parse_rv(rv_param)
            objects = self.store.list_at(rtype.key, list_rv)
        else:
            if rv_match not in ("", "NotOlderThan"):
                raise bad_request(f"resourceVersionMatch: {rv_match!r}: must be Exact or NotOlderThan")
            if rv_param and rv_param != "0" and _parse_rv(rv_param) > self.store.resource_version:
                raise resource_version_too_large(_parse_rv(rv_param), self.store.resource_version)
            objects = list(self.store.objects(rtype.key))
            list_rv = self.store.resource_version
        selected = sorted((o for o in objects
                           if (target.namespace is None or o["metadata"].get("namespace") == target.namespace)
                           and labels.matches(o["metadata"].get("labels")) and fields.matches(o)),
                          key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        if after is not None:
            selected = [o for o in selected if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after]
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        limit = _int_param(query, "limit")
        if limit and len(selected) > limit:
            last = selected[limit - 1]["metadata"]
            meta["continue"] = _encode_continue(list_rv, (last.get("namespace", ""), last["name"]))
            meta["remainingItemCount"] = len(selected) - limit
            selected = selected[:limit]
        items = [_as_version(o, rtype) for o in selected]
        if _wants_table(request):
            return _json_response(tables.table(rtype, items, meta, query.get("includeObject", "Metadata"),
                                               self._now()))
        return _json_response({"kind": rtype.list_kind, "apiVersion": rtype.api_version, "metadata": meta,
                               "items": items})

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        rtype, query = target.rtype, request.query
        watcher = self.store.make_watcher(target.namespace, parse_label_selector(query.get("labelSelector")),
                                          parse_field_selector(query.get("fieldSelector"), rtype.kind))
        rv_param = query.get("resourceVersion", "")
        since = None if rv_param in ("", "0") else _parse_rv(rv_param)
        timeout = _int_param(query, "timeoutSeconds")
        bookmarks = _flag(query.get("allowWatchBookmarks"))
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            self.store.watch(rtype.key, watcher, since)
        except APIError as err:
            await response.prepare(request)
            await response.write((_dumps({"type": "ERROR", "object": err.status()}) + "\n").encode())
            await response.write_eof()
            return response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        interval = self.settings.bookmark_interval
        next_bookmark = loop.time() + interval
        as_table, include, first_table = _wants_table(request), query.get("includeObject", "Metadata"), True
        try:
            await response.prepare(request)
            while True:
                now = loop.time()
                if deadline is not None and now >= deadline:
                    break
                wait = min(deadline - now if deadline is not None else _LIVENESS_CHECK,
                           max(0.0, next_bookmark - now) if bookmarks else _LIVENESS_CHECK, _LIVENESS_CHECK)
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), wait)
                except asyncio.TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break           # the client went away while the watch was quiet
                    if bookmarks and loop.time() >= next_bookmark:
                        await response.write(self._bookmark(rtype))
                        next_bookmark = loop.time() + interval
                    continue
                chunk, ended = [], False
                while item is not None:
                    obj = _as_version(item[1], rtype)
                    if as_table:
                        obj = tables.table(rtype, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]},
                                           include, self._now())
                        if not first_table:
                            obj["columnDefinitions"] = []   # as the real server: columns only once
                        first_table = False
                    chunk.append(_dumps({"type": item[0], "object": obj}) + "\n")
                    if watcher.queue.empty() or len(chunk) >= 256:
                        break
                    item = watcher.queue.get_nowait()
                ended = item is None
                if chunk:
                    await response.write("".join(chunk).encode())
                if ended:
                    break
                if bookmarks and loop.time() >= next_bookmark and watcher.queue.empty():
                    await response.write(self._bookmark(rtype))
                    next_bookmark = loop.time() + interval
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.store.unwatch(rtype.key, watcher)
        return response

    def _bookmark(self, rtype: ResourceType) -> bytes:
        obj = {"kind": rtype.kind, "apiVersion": rtype.api_version,
               "metadata": {"resourceVersion": str(self.store.resource_version)}}
        return (_dumps({"type": "BOOKMARK", "object": obj}) + "\n").encode()

    # ---------------------------------------------------------------------------------------
    # writes

    async def _post(self, request: web.Request, target: Target) -> web.Response:
        body = await _read_body(request)
        if target.rtype.namespaced and target.namespace is None:
            raise bad_request(f"{target.rtype.plural} are namespaced: "
                              f"POST to /namespaces/<namespace>/{target.rtype.plural}")
        obj = self._create(target.rtype, body, target.namespace, self._now(), _dry_run(request),
                           _strict(request))
        return _json_response(_as_version(obj, target.rtype), 201)

    def _create(self, rtype: ResourceType, body: Any, namespace: str | None, now: datetime, dry_run: bool,
                strict: bool = False) -> dict[str, Any]:
        obj = semantics.prepare_create(rtype, body, namespace, now, lambda: str(uuid.uuid4()),
                                       lambda alphabet, n: "".join(secrets.choice(alphabet) for _ in range(n)))
        meta = obj["metadata"]
        if rtype.namespaced:
            ns = self.store.get(("", "namespaces"), None, meta["namespace"])
            if ns is None:
                raise not_found("namespaces", meta["namespace"])
            if ns["metadata"].get("deletionTimestamp"):
                raise APIError(403, "Forbidden", f'{rtype.plural} "{meta["name"]}" is forbidden: unable to '
                               f"create new content in namespace {meta['namespace']} because it is being "
                               f"terminated")
        if self.store.get(rtype.key, meta.get("namespace"), meta["name"]) is not None:
            raise already_exists(rtype.plural, meta["name"], rtype.group)
        obj = self._validated(rtype, obj, strict)
        if rtype == CRD_TYPE:
            self._check_crd(obj)
        if rtype.kind == "Service" and not rtype.group:
            used = {ip for svc in self.store.objects(rtype.key)
                    for ip in (svc.get("spec") or {}).get("clusterIPs") or []}
            obj = semantics.assign_cluster_ip(obj, used)
        if dry_run:
            return {**obj, "metadata": {**meta, "resourceVersion": str(self.store.resource_version)}}
        stored = self.store.write(rtype.key, obj, "ADDED")
        if rtype == CRD_TYPE:
            stored = self._established(stored)
        LOG.debug("created", kind=rtype.kind, namespace=meta.get("namespace", ""), name=meta["name"],
                  resource_version=stored["metadata"]["resourceVersion"])
        return stored

    def _validated(self, rtype: ResourceType, obj: dict[str, Any], strict: bool) -> dict[str, Any]:
        if rtype.group and rtype.schema is not None:
            return validate_custom(rtype, obj, strict)
        return validate_builtin(rtype, obj, strict)

    def _check_crd(self, crd: dict[str, Any]) -> None:
        from_crd(crd)

    def _established(self, crd: dict[str, Any]) -> dict[str, Any]:
        """Serve the CRD's kinds and mark it Established, as the CRD controllers would."""
        served = self.registry.register_crd(crd)
        LOG.info("serving custom resource", crd=crd["metadata"]["name"],
                 versions=",".join(t.version for t in served), scope="Namespaced" if served[0].namespaced
                 else "Cluster")
        when = semantics.timestamp(self._now())
        names = dict(crd["spec"]["names"])
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
        storage = next((v["name"] for v in crd["spec"]["versions"] if v.get("storage")),
                       crd["spec"]["versions"][0]["name"])
        status = {"conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": when},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": when}],
            "acceptedNames": names, "storedVersions": [storage]}
        return self.store.write(CRD_TYPE.key, {**crd, "status": status}, "MODIFIED")

    async def _put(self, request: web.Request, target: Target) -> web.Response:
        body = await _read_body(request)
        current = self.store.get(target.rtype.key, target.namespace, target.name or "")
        if current is None:
            if target.subresource is None and isinstance(body, dict) and \
                    not (body.get("metadata") or {}).get("resourceVersion"):
                # Kubernetes lets an unconditional update create the object.
                body = {**body, "metadata": {**(body.get("metadata") or {}), "name": target.name}}
                obj = self._create(target.rtype, body, target.namespace, self._now(), _dry_run(request),
                                   _strict(request))
                return _json_response(_as_version(obj, target.rtype), 201)
            raise not_found(target.rtype.plural, target.name or "", target.rtype.group)
        obj = self._update(target, current, body, _dry_run(request), _strict(request))
        return _json_response(_as_version(obj, target.rtype))

    def _update(self, target: Target, current: dict[str, Any], body: Any, dry_run: bool,
                strict: bool = False) -> dict[str, Any]:
        rtype = target.rtype
        new = semantics.prepare_update(rtype, current, body, target.subresource)
        new = self._validated(rtype, new, strict)
        if rtype == CRD_TYPE and target.subresource is None:
            self._check_crd(new)
        if dry_run:
            return new
        if new == current:
            return current          # a no-op write keeps the resourceVersion, as Kubernetes does
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.store.write(rtype.key, new, "MODIFIED")
            return self._remove(rtype, meta.get("namespace"), meta["name"])
        stored = self.store.write(rtype.key, new, "MODIFIED")
        if rtype == CRD_TYPE and target.subresource is None:
            stored = self._established(stored)
        return stored

    async def _patch(self, request: web.Request, target: Target) -> web.Response:
        rtype = target.rtype
        content_type = request.content_type
        raw = await request.read()
        if content_type == APPLY_PATCH:
            try:
                patch = yaml.safe_load(raw.decode() or "{}")
            except yaml.YAMLError as exc:
                raise bad_request(f"apply patch: not valid YAML: {exc}") from exc
            if not request.query.get("fieldManager"):
                raise bad_request("PATCH with application/apply-patch+yaml requires the fieldManager "
                                  "query parameter")
        else:
            patch = _parse_json(raw)
        current = self.store.get(rtype.key, target.namespace, target.name or "")
        if current is None:
            if content_type == APPLY_PATCH and target.subresource is None:
                body = {**patch, "metadata": {**(patch.get("metadata") or {}), "name": target.name}}
                obj = self._create(rtype, body, target.namespace, self._now(), _dry_run(request),
                                   _strict(request))
                return _json_response(_as_version(obj, rtype), 201)
            raise not_found(rtype.plural, target.name or "", rtype.group)
        if content_type == JSON_PATCH:
            patched = patching.json_patch(current, patch)
        elif content_type == MERGE_PATCH:
            patched = patching.merge_patch(current, patch)
        elif content_type == STRATEGIC_PATCH:
            if not rtype.strategic_merge:
                raise unsupported_media_type(content_type)
            patched = patching.strategic_merge_patch(current, patch, rtype.kind)
        elif content_type == APPLY_PATCH:
            if not isinstance(patch, dict):
                raise bad_request("apply patch: the body must be an object")
            applied = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
            applied["metadata"] = {k: v for k, v in (patch.get("metadata") or {}).items()
                                   if k not in ("resourceVersion",)}
            patched = (patching.strategic_merge_patch(current, applied, rtype.kind) if rtype.strategic_merge
                       else patching.merge_patch(current, applied))
        else:
            raise unsupported_media_type(content_type)
        obj = self._update(target, current, patched, _dry_run(request), _strict(request))
        return _json_response(_as_version(obj, rtype))

    def _delete(self, request: web.Request, target: Target, options: Any) -> web.Response:
        rtype = target.rtype
        current = self._existing(target)
        if not isinstance(options, dict):
            raise bad_request("DeleteOptions must be a JSON object")
        semantics.check_precondition(rtype, current, options.get("preconditions") or {})
        if _dry_run(request) or "All" in (options.get("dryRun") or []):
            return _json_response(_as_version(current, rtype))
        return _json_response(_as_version(self._delete_object(rtype, current), rtype))

    def _delete_object(self, rtype: ResourceType, current: dict[str, Any]) -> dict[str, Any]:
        meta = current["metadata"]
        if rtype.kind == "Namespace" and not rtype.group:
            self._empty_namespace(meta["name"])
            if self._namespace_has_objects(meta["name"]):
                if meta.get("deletionTimestamp"):
                    return current
                marked = {**current, "metadata": {**meta, "deletionTimestamp": semantics.timestamp(self._now())},
                          "status": {**(current.get("status") or {}), "phase": "Terminating"}}
                return self.store.write(rtype.key, marked, "MODIFIED")
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return current
            marked = {**current, "metadata": {**meta, "deletionTimestamp": semantics.timestamp(self._now()),
                                              "deletionGracePeriodSeconds": 0}}
            return self.store.write(rtype.key, marked, "MODIFIED")
        return self._remove(rtype, meta.get("namespace"), meta["name"])

    def _remove(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        final = self.store.remove(rtype.key, namespace, name)
        if rtype == CRD_TYPE:
            self.registry.unregister_crd(name)
            LOG.info("custom resource withdrawn", crd=name)
            self.store.drop_kind((final["spec"]["group"], final["spec"]["names"]["plural"]))
        elif namespace:
            ns = self.store.get(("", "namespaces"), None, namespace)
            if ns is not None and ns["metadata"].get("deletionTimestamp") and \
                    not self._namespace_has_objects(namespace):
                self.store.remove(("", "namespaces"), None, namespace)
        return final

    def _namespaced_types(self) -> list[ResourceType]:
        seen, result = set(), []
        for rtype in self.registry.types():
            if rtype.namespaced and rtype.key not in seen:
                seen.add(rtype.key)
                result.append(rtype)
        return result

    def _namespace_has_objects(self, namespace: str) -> bool:
        return any(next(self.store.objects(t.key, namespace), None) is not None for t in self._namespaced_types())

    def _empty_namespace(self, namespace: str) -> None:
        for rtype in self._namespaced_types():
            for obj in list(self.store.objects(rtype.key, namespace)):
                self._delete_object(rtype, obj)

    def _delete_collection(self, request: web.Request, target: Target) -> web.Response:
        rtype = target.rtype
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(request.query.get("fieldSelector"), rtype.kind)
        chosen = [o for o in self.store.objects(rtype.key, target.namespace)
                  if labels.matches(o["metadata"].get("labels")) and fields.matches(o)]
        deleted = chosen if _dry_run(request) else [self._delete_object(rtype, o) for o in chosen]
        return _json_response({"kind": rtype.list_kind, "apiVersion": rtype.api_version,
                               "metadata": {"resourceVersion": str(self.store.resource_version)},
                               "items": [_as_version(o, rtype) for o in deleted]})


# ---------------------------------------------------------------------------------------------
# request helpers


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _dry_run(request: web.Request) -> bool:
    return "All" in request.query.getall("dryRun", [])


def _strict(request: web.Request) -> bool:
    return request.query.get("fieldValidation", "") == "Strict"


def _int_param(query: Any, name: str) -> int | None:
    value = query.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"query parameter {name}: {value!r}: must be an integer") from None
    if number < 0:
        raise bad_request(f"query parameter {name}: {value!r}: must not be negative")
    return number


def _parse_rv(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"resourceVersion: {value!r}: must be an integer string") from None
    if number < 0:
        raise bad_request(f"resourceVersion: {value!r}: must not be negative")
    return number


def _encode_continue(rv: int, after: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(_dumps({"rv": rv, "after": list(after)}).encode()).decode()


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), (str(data["after"][0]), str(data["after"][1]))
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
        raise bad_request(f"continue: {token!r}: not a continue token issued by this server") from None


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode() or "null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from exc


async def _read_body(request: web.Request, allow_empty: bool = False) -> Any:
    raw = await request.read()
    if "protobuf" in request.content_type:
        return protobuf.decode_object(raw) if raw else None
    if not raw.strip():
        if allow_empty:
            return None
        raise bad_request("the request needs a body")
    if "yaml" in request.content_type:
        try:
            return yaml.safe_load(raw.decode())
        except yaml.YAMLError as exc:
            raise bad_request(f"the request body is not valid YAML: {exc}") from exc
    return _parse_json(raw)


def _as_version(obj: dict[str, Any], rtype: ResourceType) -> dict[str, Any]:
    """The object as read through ``rtype``'s version (CRDs may serve several)."""
    if obj.get("apiVersion") == rtype.api_version:
        return obj
    return {**obj, "apiVersion": rtype.api_version}


__all__ = ["APIServer", "Settings", "Watcher"]
