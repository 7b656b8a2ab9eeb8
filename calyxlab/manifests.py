"""Applies a file of Kubernetes manifests to the lab's API, as `kubectl apply -f` would for
the kinds Calyx uses: each object is read first; one that does not exist is created, one that
exists is merged (JSON merge patch of its metadata labels/annotations and spec), so a Node the
lab registered keeps its status while a manifest adds its annotations, and a partial document
(only the field to change) updates an object that the API would refuse to create from it.

A scenario's Calyx resources (IPPool, BGPConfiguration, BGPPeer, Node annotations, Secrets)
live in ``cluster.yaml`` beside its topology file, because containerlab's schema has no place
for them; the lab applies that file after the nodes register and before any daemon starts.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

import kubernetes.client
import yaml
from kubernetes.client.rest import ApiException

from calyx.kube import client as kube_client
from calyx.kube import resources

MANIFEST_NAME = "cluster.yaml"
CRD_ESTABLISHED_TIMEOUT = 60.0

_BY_KIND = {(r.api_version, r.kind): r for r in resources.ALL}


class ManifestError(ValueError):
    """A manifest that cannot be applied; the message names the file, document and cause."""


def scenario_manifest(topology_file: Path) -> Path | None:
    """The ``cluster.yaml`` beside a topology file, if there is one."""
    candidate = topology_file.parent / MANIFEST_NAME
    return candidate if candidate.is_file() else None


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def load(path: Path) -> list[dict[str, Any]]:
    """Parse and check every document of the file before anything is applied."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None
    for index, doc in enumerate(docs):
        where = f"{path}: document {index + 1}"
        if not isinstance(doc, dict):
            raise ManifestError(f"{where}: expected a mapping, got {type(doc).__name__}")
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in _BY_KIND:
            raise ManifestError(f"{where}: kind {key[1]!r} of {key[0]!r} is not one the lab applies "
                                f"(known: {', '.join(sorted(k for _, k in _BY_KIND))})")
        if not (doc.get("metadata") or {}).get("name"):
            raise ManifestError(f"{where}: metadata.name is required")
    return docs


def _merge_patch(doc: dict[str, Any]) -> dict[str, Any]:
    meta = doc.get("metadata") or {}
    patch: dict[str, Any] = {"metadata": {k: meta[k] for k in ("labels", "annotations") if k in meta}}
    for field in ("spec", "data", "stringData"):
        if field in doc:
            patch[field] = doc[field]
    return patch


def apply(kubeconfig: str, docs: Iterable[dict[str, Any]]) -> list[str]:
    """Create or merge each document; returns one line per object, like kubectl's output."""
    api = kube_client.load(kubeconfig)
    out: list[str] = []
    try:
        for doc in docs:
            resource = _BY_KIND[(doc["apiVersion"], doc["kind"])]
            name = doc["metadata"]["name"]
            namespace = doc["metadata"].get("namespace", "default") if resource.namespaced else None
            try:
                resources.get_object(api, resource, name, namespace)
                exists = True
            except ApiException as exc:
                if exc.status != 404:
                    raise ManifestError(f"{resource.kind} {name!r}: read failed: "
                                        f"{exc.status} {exc.reason}: {exc.body}") from None
                exists = False
            try:
                if exists:
                    resources.patch_object(api, resource, name, _merge_patch(doc), namespace)
                    verb = "configured"
                else:
                    resources.create_object(api, resource, doc, namespace)
                    verb = "created"
            except ApiException as exc:
                raise ManifestError(f"{resource.kind} {name!r}: {'patch' if exists else 'create'} "
                                    f"failed: {exc.status} {exc.reason}: {exc.body}") from None
            out.append(f"{resource.kind.lower()}/{name} {verb}")
    finally:
        api.close()
    return out


def install_crds(kubeconfig: str, crd_dir: Path) -> list[str]:
    """Create (or replace) every CustomResourceDefinition in ``crd_dir`` and wait until the API
    server serves each (condition Established), as ``kubectl apply`` then ``kubectl wait`` would."""
    api = kube_client.load(kubeconfig)
    ext = kubernetes.client.ApiextensionsV1Api(api)
    out, names = [], []
    try:
        for path in sorted(crd_dir.glob("*.yaml")):
            doc = yaml.safe_load(path.read_text())
            name = doc["metadata"]["name"]
            try:
                ext.create_custom_resource_definition(doc)
                out.append(f"customresourcedefinition.apiextensions.k8s.io/{name} created")
            except ApiException as exc:
                if exc.status != 409:
                    raise ManifestError(f"{path}: CRD {name!r} rejected: {exc.status} {exc.reason}: "
                                        f"{exc.body}") from None
                current = ext.read_custom_resource_definition(name)
                doc["metadata"]["resourceVersion"] = current.metadata.resource_version
                ext.replace_custom_resource_definition(name, doc)
                out.append(f"customresourcedefinition.apiextensions.k8s.io/{name} configured")
            names.append(name)
        deadline = time.monotonic() + CRD_ESTABLISHED_TIMEOUT
        for name in names:
            while not any(c.type == "Established" and c.status == "True" for c in
                          (ext.read_custom_resource_definition(name).status.conditions or [])):
                if time.monotonic() > deadline:
                    raise ManifestError(f"CRD {name!r} not Established within "
                                        f"{CRD_ESTABLISHED_TIMEOUT:.0f} s")
                time.sleep(0.1)
    finally:
        api.close()
    return out
