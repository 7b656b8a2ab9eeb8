"""``calyxctl get ippool|bgppeer|bgpconfig [NAME] [-o wide|yaml|json]``: Calyx's resources as
calicoctl lists them. An object the daemons refuse is listed with its validation error."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from calyx import crds
from calyx.kube import client as kube_client
from calyx.kube import resources
from calyxctl import kubeaccess, resourceview
from calyxctl.tables import plain_table

_RESOURCES = {"ippools": resources.IPPOOLS, "bgppeers": resources.BGPPEERS,
              "bgpconfigurations": resources.BGPCONFIGURATIONS}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("get", help="list IPPools, BGPPeers or BGPConfigurations",
                                   description="List Calyx resources as the daemons read them.")
    parser.add_argument("kind", metavar="TYPE",
                        help="ippool(s), bgppeer(s), bgpconfig(s) / bgpconfiguration(s)")
    parser.add_argument("name", nargs="?", metavar="NAME", help="one object by name")
    parser.add_argument("-o", "--output", choices=("ps", "wide", "yaml", "json"), default="ps",
                        help="ps (default): table; wide: more columns; yaml/json: the objects")
    kubeaccess.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        kind = resourceview.kind_named(args.kind)
    except ValueError as exc:
        print(f"calyxctl get: {exc}", file=sys.stderr)
        return 2
    resource = _RESOURCES[kind.plural]
    try:
        api = kubeaccess.load(args)
        if args.name:
            objects = [kubeaccess.get_raw(api, resource, args.name)]
        else:
            objects = kubeaccess.list_raw(api, resource)
    except kube_client.ClientConfigError as exc:
        print(f"calyxctl get: {exc}", file=sys.stderr)
        return 2
    except ApiException as exc:
        if exc.status == 404 and args.name:
            print(f"calyxctl get: {kind.kind} {args.name!r} not found", file=sys.stderr)
            return 1
        print(f"calyxctl get: {resource}: {kubeaccess.describe_error(exc)}", file=sys.stderr)
        return 1
    except (HTTPError, OSError) as exc:
        print(f"calyxctl get: {resource}: {kubeaccess.describe_error(exc)}", file=sys.stderr)
        return 1

    if args.output in ("yaml", "json"):
        shown = [resourceview.without_server_fields(o) for o in objects]
        document: Any = shown[0] if args.name else {"apiVersion": "v1", "kind": "List", "items": shown}
        if args.output == "json":
            print(json.dumps(document, indent=2, sort_keys=True))
        else:
            print(yaml.safe_dump(document, sort_keys=False), end="")
        return 0

    wide = args.output == "wide"
    rows = resourceview.rows(kind, objects, crds.spec_schemas(), wide=wide)
    print(plain_table(resourceview.columns(kind, wide), [r.cells for r in rows]))
    invalid = [r for r in rows if r.error]
    if invalid:
        print()
        for row in invalid:
            print(f"INVALID (ignored by the daemons): {row.error}")
    return 0
