"""The engine stand-in for offline plans: the Pulumi SDK's own mock monitor, recording what a
real engine would see (wire-form inputs, parent, provider, dependencies) and answering with
realistic outputs so apply-chains resolve.

Per-cloud outputs live in ``cloud_<name>.py`` modules beside this one; each may define
``outputs(typ, name, inputs, ctx) -> dict | None`` and ``call(token, args, ctx) -> dict | None``
(None: not mine).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from google.protobuf import json_format
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks

STACK_REFERENCE = "pulumi:pulumi:StackReference"


@dataclass
class MockContext:
    """What mock outputs may depend on: the stack's cloud coordinates, and stable ids."""

    stack: str
    project: str
    account: str = "123456789012"
    region: str = "eu-west-1"
    gcp_project: str = "skyfleet-example"
    gcp_project_number: str = "123456789012"

    def uid(self, name: str, n: int = 17) -> str:
        """A deterministic hex id for ``name`` in this stack."""
        return hashlib.sha256(f"{self.stack}/{name}".encode()).hexdigest()[:n]


@dataclass
class Registration:
    """One resource as the engine saw it."""

    type: str
    name: str
    urn: str
    custom: bool
    parent: str | None
    provider: str | None
    inputs: dict[str, Any]  # wire form (protobuf Struct as JSON), as a policy receives it
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    id: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    read: bool = False
    # Resource options the engine passes on to analyzers (AnalyzerResourceOptions).
    options: dict[str, Any] = field(default_factory=dict)


def _cloud_modules() -> list[ModuleType]:
    from skyfleet import plan as pkg

    return [
        importlib.import_module(f"{pkg.__name__}.{m.name}")
        for m in pkgutil.iter_modules(pkg.__path__)
        if m.name.startswith("cloud_")
    ]


class SkyfleetMocks(Mocks):
    """Answers resource registrations and invokes like a provider would after an apply."""

    def __init__(
        self,
        ctx: MockContext,
        *,
        preview: bool,
        stack_outputs: Callable[[str], Mapping[str, Any] | None],
    ) -> None:
        self.ctx = ctx
        self.preview = preview
        self.stack_outputs = stack_outputs
        self.missing_references: list[str] = []
        self._clouds = _cloud_modules()

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict]:
        if args.typ == STACK_REFERENCE:
            ref = str(args.inputs.get("name") or args.resource_id or args.name)
            outputs = self.stack_outputs(ref)
            if outputs is None:
                self.missing_references.append(ref)
                outputs = {}
            return ref, {"name": ref, "outputs": dict(outputs), "secretOutputNames": []}
        if self.preview:
            # A preview knows inputs only; everything the provider computes stays unknown.
            return None, dict(args.inputs)
        extra: dict[str, Any] = {}
        for cloud in self._clouds:
            fn = getattr(cloud, "outputs", None)
            found = fn(args.typ, args.name, dict(args.inputs), self.ctx) if fn else None
            if found is not None:
                extra = found
                break
        rid = str(extra.pop("id", None) or args.resource_id or f"{args.name}-{self.ctx.uid(args.name, 8)}")
        generic = {"id": rid, "urn": None}
        if args.typ.startswith("aws:") and "arn" not in extra:
            service = args.typ.split(":")[1].split("/")[0]
            generic["arn"] = f"arn:aws:{service}:{self.ctx.region}:{self.ctx.account}:{args.name}"
        if "tags" in args.inputs and "tagsAll" not in extra:
            generic["tagsAll"] = args.inputs["tags"]
        generic.pop("urn")
        return rid, {**generic, **args.inputs, **extra}

    def call(self, args: MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        for cloud in self._clouds:
            fn = getattr(cloud, "call", None)
            found = fn(args.token, dict(args.args), self.ctx) if fn else None
            if found is not None:
                return found, []
        found = _common_call(args.token, dict(args.args), self.ctx)
        if found is None:
            raise NotImplementedError(
                f"the offline plan has no answer for the invoke {args.token}; add one to "
                "skyfleet/plan/cloud_<provider>.py"
            )
        return found, []


class RecordingMonitor(MockMonitor):
    """The SDK's mock monitor, keeping the registration details a policy engine sees."""

    def __init__(self, mocks: SkyfleetMocks) -> None:
        super().__init__(mocks)
        self.registrations: dict[str, Registration] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        state = self.resources.get(response.urn)
        self.registrations[response.urn] = Registration(
            type=request.type,
            name=request.name,
            urn=response.urn,
            custom=bool(request.custom),
            parent=request.parent or None,
            provider=request.provider or None,
            inputs=json_format.MessageToDict(request.object),
            dependencies=list(request.dependencies),
            property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
            id=response.id or None,
            outputs=json_format.MessageToDict(response.object) if state is not None else {},
            options={
                "protect": bool(request.protect),
                "ignoreChanges": list(request.ignoreChanges),
                "deleteBeforeReplace": bool(request.deleteBeforeReplace),
                "additionalSecretOutputs": list(request.additionalSecretOutputs),
                "retainOnDelete": bool(request.retainOnDelete),
            },
        )
        return response

    def ReadResource(self, request: Any) -> Any:
        response = super().ReadResource(request)
        self.registrations[response.urn] = Registration(
            type=request.type,
            name=request.name,
            urn=response.urn,
            custom=True,
            parent=request.parent or None,
            provider=request.provider or None,
            inputs=json_format.MessageToDict(request.properties),
            dependencies=list(request.dependencies),
            property_dependencies={},
            id=request.id or None,
            outputs=json_format.MessageToDict(response.properties),
            read=True,
        )
        return response


# --- invokes every cloud program tends to make -------------------------------------------------


def _common_call(token: str, args: dict[str, Any], ctx: MockContext) -> dict[str, Any] | None:
    region = args.get("region") or ctx.region
    if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
        names = [f"{region}{z}" for z in "abc"]
        return {"names": names, "zoneIds": [f"euw1-az{i}" for i in (1, 2, 3)], "id": region}
    if token == "aws:index/getCallerIdentity:getCallerIdentity":
        return {
            "accountId": ctx.account,
            "arn": f"arn:aws:iam::{ctx.account}:user/skyfleet",
            "userId": "AIDAEXAMPLE",
            "id": ctx.account,
        }
    if token in ("aws:index/getRegion:getRegion", "aws:index/region:Region"):
        return {"name": region, "region": region, "id": region, "endpoint": f"ec2.{region}.amazonaws.com"}
    if token == "aws:index/getPartition:getPartition":
        return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
    if token == "aws:iam/getPolicyDocument:getPolicyDocument":
        return {"json": _policy_json(args), "id": ctx.uid(json.dumps(args, sort_keys=True), 10)}
    if token == "gcp:organizations/getProject:getProject":
        project = args.get("projectId") or ctx.gcp_project
        return {
            "projectId": project,
            "number": ctx.gcp_project_number,
            "name": project,
            "id": f"projects/{project}",
        }
    if token == "gcp:organizations/getClientConfig:getClientConfig":
        return {
            "project": ctx.gcp_project,
            "region": region,
            "zone": f"{region}-b",
            "accessToken": "",
            "id": "cc",
        }
    return None


def _policy_json(args: dict[str, Any]) -> str:
    """aws.iam.get_policy_document rendered the way the provider does."""
    statements = []
    for st in args.get("statements") or []:
        out: dict[str, Any] = {"Effect": st.get("effect", "Allow")}
        if st.get("sid"):
            out["Sid"] = st["sid"]
        for key, wire in (
            ("actions", "Action"),
            ("notActions", "NotAction"),
            ("resources", "Resource"),
            ("notResources", "NotResource"),
        ):
            if st.get(key):
                vals = st[key]
                out[wire] = vals[0] if len(vals) == 1 else vals
        for key, wire in (("principals", "Principal"), ("notPrincipals", "NotPrincipal")):
            if st.get(key):
                principal: dict[str, Any] = {}
                for p in st[key]:
                    ids = p.get("identifiers", [])
                    principal[p["type"]] = ids[0] if len(ids) == 1 else ids
                out[wire] = "*" if principal == {"*": "*"} else principal
        if st.get("conditions"):
            cond: dict[str, dict[str, Any]] = {}
            for c in st["conditions"]:
                vals = c.get("values", [])
                cond.setdefault(c["test"], {})[c["variable"]] = vals[0] if len(vals) == 1 else vals
            out["Condition"] = cond
        statements.append(out)
    return json.dumps({"Version": "2012-10-17", "Statement": statements})
