"""The engine stand-in for offline plans: the Pulumi SDK's own mock monitor, recording what a
real engine would see (wire-form inputs, parent, provider, dependencies) and answering every
registration, read, invoke and method call the way a provider would.

Answers come in layers. Per-cloud models in ``cloud_<name>.py`` beside this one give realistic
values (ARNs, DNS names, hosts); each may define ``outputs(typ, name, inputs, ctx) -> dict |
None``, ``call(token, args, ctx) -> dict | None`` and, for multi-language components,
``component_counts(typ, name, inputs, ctx) -> dict | None`` (None: not mine). Every field they leave
out is synthesized from the SDK's declared types (``synth.py``), so no program fails because a
model had no answer. In a preview, every value the provider computes stays unknown.

Multi-language components (``remote`` registrations) are implemented by provider plugins that
cannot run offline: they are recorded as not expanded, and the program gets outputs of their
declared types, with references to stand-in children that are not part of the plan.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import json
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlparse

import yaml
from google.protobuf import json_format, struct_pb2
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks
from pulumi.runtime.proto import provider_pb2, resource_pb2

from skyfleet.plan import sdk
from skyfleet.plan.synth import UNKNOWN, Synth

STACK_REFERENCE = "pulumi:pulumi:StackReference"
SIG = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
OUTPUT_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
MLC_REASON = (
    "multi-language component: its implementation is a provider plugin that does not run "
    "offline, so its child resources were not planned and not checked"
)


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
    remote: bool = False
    # Resource options the engine passes on to analyzers (AnalyzerResourceOptions).
    options: dict[str, Any] = field(default_factory=dict)
    # Where the program registered it: (file, line), from the SDK's source position.
    source: tuple[str, int] | None = None


@dataclass
class Unexpanded:
    """A component whose children the offline plan could not produce."""

    type: str
    name: str
    urn: str
    reason: str
    # Types of the children its declared outputs refer to (stand-ins, not planned).
    children: list[str] = field(default_factory=list)


def _cloud_modules() -> list[ModuleType]:
    from skyfleet import plan as pkg

    return [
        importlib.import_module(f"{pkg.__name__}.{m.name}")
        for m in pkgutil.iter_modules(pkg.__path__)
        if m.name.startswith("cloud_")
    ]


def plain(value: Any) -> Any:
    """A wire value as a provider sees it: secrets unwrapped, resource references as their
    id (else URN), output values as their value (else unknown)."""
    if isinstance(value, dict):
        sig = value.get(SIG)
        if sig == SECRET_SIG:
            return plain(value.get("value"))
        if sig == RESOURCE_SIG:
            return value.get("id") or value.get("urn", "")
        if sig == OUTPUT_SIG:
            return plain(value["value"]) if "value" in value else UNKNOWN
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(json.loads(json.dumps(value, default=str)))
    return out


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
        # Invokes answered with nothing: no model and no declared result type.
        self.unanswered: list[str] = []
        # Helm charts (by release name) whose rendering needs helm, which the plan does not run.
        self.unrendered: dict[str, str] = {}
        # yaml.ConfigFile components (by name) whose manifest is a URL, never fetched offline.
        self.unfetched: dict[str, str] = {}
        self._clouds = _cloud_modules()

    def _model(self, hook: str, *args: Any) -> Any:
        """The first per-cloud model's answer for ``hook`` (outputs, call, component_counts);
        None when no model knows (the caller then synthesizes)."""
        for cloud in self._clouds:
            fn = getattr(cloud, hook, None)
            found = fn(*(dict(a) if isinstance(a, dict) else a for a in args), self.ctx) if fn else None
            if found is not None:
                return found
        return None

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict]:
        rid, base, extra = self.resource(
            args.typ, args.name, dict(args.inputs), args.resource_id, custom=bool(args.custom)
        )
        return rid, {**base, **args.inputs, **extra}

    def resource(
        self,
        typ: str,
        name: str,
        inputs: dict[str, Any],
        resource_id: str | None,
        *,
        custom: bool,
        everything: bool = False,
    ) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
        """(id, defaults the inputs override, outputs that override the inputs).
        ``everything``: synthesize every field (a stand-in whose inputs nobody gave)."""
        if typ == STACK_REFERENCE:
            ref = str(inputs.get("name") or resource_id or name)
            outputs = self.stack_outputs(ref)
            if outputs is None:
                self.missing_references.append(ref)
                outputs = {}
            return ref, {}, {"name": ref, "outputs": dict(outputs), "secretOutputNames": []}
        cls = sdk.resource_class(typ) if custom and not typ.startswith("pulumi:providers:") else None
        if self.preview:
            # A preview knows inputs only; everything the provider computes stays unknown.
            if cls is None:
                return None, {}, {}
            return (
                None,
                {},
                Synth(self.ctx, typ, name).fill(cls, inputs, inputs=sdk.input_names(cls), preview=True),
            )
        extra: dict[str, Any] = self._model("outputs", typ, name, inputs) or {}
        rid = str(extra.pop("id", None) or resource_id or f"{name}-{self.ctx.uid(name, 8)}")
        generic: dict[str, Any] = {"id": rid}
        if typ.startswith("aws:") and "arn" not in extra:
            service = typ.split(":")[1].split("/")[0]
            generic["arn"] = f"arn:aws:{service}:{self.ctx.region}:{self.ctx.account}:{name}"
        if "tags" in inputs and "tagsAll" not in extra:
            generic["tagsAll"] = inputs["tags"]
        if cls is not None:
            known = {**generic, **inputs, **extra}
            declared = frozenset() if everything else sdk.input_names(cls)
            synth = Synth(self.ctx, typ, name)
            extra.update(synth.fill(cls, known, inputs=declared, preview=False, everything=everything))
        return rid, generic, extra

    def read(self, typ: str, name: str, rid: str, props: dict[str, Any]) -> dict[str, Any]:
        """A read resource's state: a read returns everything, in a preview too."""
        if typ == STACK_REFERENCE:
            _, base, extra = self.resource(typ, name, {"name": rid, **props}, rid, custom=True)
            return {**base, **extra}
        state = {**(self._model("outputs", typ, name, props) or {}), **props}
        state.pop("id", None)
        cls = sdk.resource_class(typ)
        if cls is not None:
            state.update(
                Synth(self.ctx, typ, name).fill(
                    cls, state, inputs=frozenset(), preview=False, everything=True
                )
            )
        return state

    def component(
        self, typ: str, name: str, inputs: dict[str, Any], child_ref: Callable[[type, str, int], Any]
    ) -> dict[str, Any]:
        """Outputs of a multi-language component, of the types its SDK class declares (in the
        numbers a model in cloud_<name>.py gives, where one knows the component)."""
        cls = sdk.resource_class(typ)
        if cls is None:
            return {}
        counts = self._model("component_counts", typ, name, inputs)
        synth = Synth(self.ctx, typ, name, resource_ref=child_ref, counts=counts)
        out: dict[str, Any] = {}
        for f in sdk.fields(cls):
            refs = sdk.is_resource(f.hint) or sdk.is_resource(sdk.sequence_item(f.hint))
            out[f.name] = synth.value(f.hint, (f.name,)) if refs or not self.preview else UNKNOWN
        return out

    def child(self, typ: str, name: str) -> tuple[str, dict[str, Any]]:
        """(id, state) of a stand-in child of a component that was not expanded."""
        cls = sdk.resource_class(typ)
        if self.preview:
            state = Synth(self.ctx, typ, name).fill(cls, {}, inputs=frozenset(), preview=True) if cls else {}
            return "", state
        rid, base, extra = self.resource(typ, name, {}, None, custom=True, everything=True)
        state = {**base, **extra}
        state.pop("id", None)
        return rid or "", state

    def call(self, args: MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        token, call_args = args.token, dict(args.args)
        found = self._model("call", token, call_args)
        if found is not None:
            return self._chart(token, call_args, found), []
        found = _common_call(token, call_args, self.ctx)
        if found is not None:
            return found, []
        result = sdk.invoke_result(token)
        if result is None:
            self.unanswered.append(token)
            return {}, []
        return Synth(self.ctx, token, token.rsplit(":", 1)[-1], args=call_args).result(result), []

    def method(self, token: str, args: dict[str, Any]) -> dict[str, Any]:
        """A resource method's result (e.g. an EKS cluster's getKubeconfig)."""
        result = sdk.call_result(token)
        if result is None:
            self.unanswered.append(token)
            return {}
        return Synth(self.ctx, token, token.rsplit("/", 1)[-1], args=args).result(result)

    def _chart(self, token: str, args: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
        if token == "kubernetes:helm:template":
            try:
                opts = json.loads(str(args.get("jsonOpts") or "{}"))
            except json.JSONDecodeError:
                opts = {}
            release = str(opts.get("release_name") or "")
            chart = str(opts.get("chart") or opts.get("path") or "chart")
            self.unrendered[release] = (
                f"helm chart {chart!r} is rendered by helm and its chart repository, which the "
                "offline plan does not run: its resources were not planned and not checked"
            )
        return found


class RecordingMonitor(MockMonitor):
    """The SDK's mock monitor, working on the wire form (as the engine does) and keeping the
    registration details a policy engine sees."""

    def __init__(self, mocks: SkyfleetMocks) -> None:
        super().__init__(mocks)
        self.answers = mocks
        self.registrations: dict[str, Registration] = {}
        self.unexpanded: dict[str, Unexpanded] = {}

    def RegisterResource(self, request: Any) -> Any:
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            return resource_pb2.RegisterResourceResponse(urn=urn)
        wire = json_format.MessageToDict(request.object)
        inputs = plain(wire)
        manifests = _manifests(request.type, inputs) if request.remote else None
        if isinstance(manifests, list):
            rid = ""
            state = {"resources": [self._register_object(urn, request, inputs, obj) for obj in manifests]}
        elif request.remote:
            rid = ""
            reason = manifests or _rendered_by(request.type, inputs) or MLC_REASON
            self.unexpanded[urn] = Unexpanded(request.type, request.name, urn, reason)
            state = self.answers.component(
                request.type, request.name, inputs, self._child_ref(urn, request.name)
            )
        else:
            rid_or_none, base, extra = self.answers.resource(
                request.type, request.name, inputs, request.importId or None, custom=bool(request.custom)
            )
            rid = rid_or_none or ""
            state = {**base, **wire, **extra}
        self.resources[urn] = MockMonitor.ResourceRegistration(urn, rid, plain(state))
        response = resource_pb2.RegisterResourceResponse(urn=urn, id=rid, object=struct(state))
        self.registrations[urn] = Registration(
            type=request.type,
            name=request.name,
            urn=urn,
            custom=bool(request.custom),
            parent=request.parent or None,
            provider=request.provider or None,
            inputs=wire,
            # The SDK collects these in sets (their order varies run to run); the engine reads
            # them as sets too, so the plan keeps them sorted.
            dependencies=sorted(set(request.dependencies)),
            property_dependencies={k: sorted(set(v.urns)) for k, v in request.propertyDependencies.items()},
            id=rid or None,
            outputs=json_format.MessageToDict(response.object),
            remote=bool(request.remote),
            options={
                "protect": bool(request.protect),
                "ignoreChanges": list(request.ignoreChanges),
                "deleteBeforeReplace": bool(request.deleteBeforeReplace),
                "additionalSecretOutputs": list(request.additionalSecretOutputs),
                "retainOnDelete": bool(request.retainOnDelete),
            },
            source=_source(request),
        )
        return response

    def ReadResource(self, request: Any) -> Any:
        urn = self.make_urn(request.parent, request.type, request.name)
        wire = json_format.MessageToDict(request.properties)
        state = {**wire, **self.answers.read(request.type, request.name, request.id, plain(wire))}
        self.resources[urn] = MockMonitor.ResourceRegistration(urn, request.id, plain(state))
        response = resource_pb2.ReadResourceResponse(urn=urn, id=request.id, properties=struct(state))
        self.registrations[urn] = Registration(
            type=request.type,
            name=request.name,
            urn=urn,
            custom=True,
            parent=request.parent or None,
            provider=request.provider or None,
            inputs=wire,
            dependencies=list(request.dependencies),
            property_dependencies={},
            id=request.id or None,
            outputs=json_format.MessageToDict(response.properties),
            read=True,
            source=_source(request),
        )
        return response

    def Invoke(self, request: Any) -> Any:
        args = plain(json_format.MessageToDict(request.args))
        if request.tok == "pulumi:pulumi:getResource":
            found = self.resources.get(str(args.get("urn")))
            if found is None:
                failure = provider_pb2.CheckFailure(
                    property="urn", reason=f"unknown resource {args.get('urn')}"
                )
                return resource_pb2.ResourceInvokeResponse(failures=[failure])
            ret = {"urn": found.urn, "id": found.id, "state": found.state}
            return _returning(resource_pb2.ResourceInvokeResponse(), ret)
        result, failures = self.answers.call(
            MockCallArgs(token=request.tok, args=args, provider=request.provider)
        )
        checks = [provider_pb2.CheckFailure(property=p, reason=r) for p, r in failures or []]
        return _returning(resource_pb2.ResourceInvokeResponse(failures=checks), result)

    def Call(self, request: Any) -> Any:
        args = plain(json_format.MessageToDict(request.args))
        result = self.answers.method(request.tok, args)
        return _returning(provider_pb2.CallResponse(), result)

    def _register_object(
        self, parent_urn: str, parent: Any, inputs: dict[str, Any], obj: dict[str, Any]
    ) -> dict[str, Any]:
        """One object of a ``yaml/v2`` manifest, registered as that component's provider would:
        a child resource of its own type, named ``<prefix>-<namespace>/<name>``."""
        api_version = str(obj.get("apiVersion", "v1"))
        group_version = api_version if "/" in api_version else f"core/{api_version}"
        token = f"kubernetes:{group_version}:{obj.get('kind', '')}"
        meta = obj.get("metadata") or {}
        qualified = (
            f"{meta['namespace']}/{meta.get('name', '')}" if meta.get("namespace") else meta.get("name", "")
        )
        name = f"{inputs.get('resourcePrefix') or parent.name}-{qualified}"
        urn = self.make_urn(parent_urn, token, name)
        rid_or_none, base, extra = self.answers.resource(token, name, dict(obj), None, custom=True)
        state = {**base, **obj, **extra}
        rid = rid_or_none or ""
        self.resources[urn] = MockMonitor.ResourceRegistration(urn, rid, plain(state))
        self.registrations[urn] = Registration(
            type=token,
            name=name,
            urn=urn,
            custom=True,
            parent=parent_urn,
            provider=None,
            inputs=json.loads(json.dumps(obj, default=str)),
            dependencies=[],
            property_dependencies={},
            id=rid or None,
            outputs=json_format.MessageToDict(struct(state)),
            source=_source(parent),
        )
        return {SIG: RESOURCE_SIG, "urn": urn, "id": rid, "packageVersion": ""}

    def _child_ref(self, parent_urn: str, parent_name: str) -> Callable[[type, str, int], Any]:
        """A resource reference to a stand-in child, so typed outputs deserialize."""

        def ref(cls: type, path: str, index: int) -> Any:
            token = sdk.token_of(cls)
            if token is None:
                return None
            name = f"{parent_name}-{path}-{index + 1}" if path else parent_name
            urn = self.make_urn(parent_urn, token, name)
            if urn not in self.resources:
                rid, state = self.answers.child(token, name)
                self.resources[urn] = MockMonitor.ResourceRegistration(urn, rid, state)
                self.unexpanded[parent_urn].children.append(token)
            return {SIG: RESOURCE_SIG, "urn": urn, "id": self.resources[urn].id, "packageVersion": ""}

        return ref


def _rendered_by(typ: str, inputs: dict[str, Any]) -> str | None:
    """Why a Kubernetes component that renders with a tool was not expanded."""
    if typ == "kubernetes:helm.sh/v4:Chart":
        return (
            f"helm chart {str(inputs.get('chart') or 'chart')!r} is rendered by helm and its chart "
            "repository, which the offline plan does not run: its resources were not planned and not checked"
        )
    if typ == "kubernetes:kustomize/v2:Directory":
        return (
            f"kustomization {str(inputs.get('directory') or '')!r} is built by kustomize, which the "
            "offline plan does not run: its resources were not planned and not checked"
        )
    return None


_MANIFEST_COMPONENTS = ("kubernetes:yaml/v2:ConfigFile", "kubernetes:yaml/v2:ConfigGroup")


def _manifests(typ: str, inputs: dict[str, Any]) -> list[dict[str, Any]] | str | None:
    """The objects of a ``yaml/v2`` ConfigFile or ConfigGroup, read here as its provider reads
    them (files and globs relative to the program, YAML text, objects; ``*List`` kinds
    flattened). A reason string when they cannot be read offline; None for other types."""
    if typ not in _MANIFEST_COMPONENTS:
        return None
    files = [inputs["file"]] if "file" in inputs else list(inputs.get("files") or [])
    texts: list[str] = []
    for pattern in files:
        pattern = str(pattern)
        if pattern == UNKNOWN or "://" in pattern:
            return f"manifest {pattern!r} is fetched or computed at deployment: its objects were not planned"
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for path in paths:
            try:
                texts.append(Path(path).read_text())
            except OSError as exc:
                return f"manifest {path!r} cannot be read ({exc.strerror}): its objects were not planned"
    yaml_inputs = inputs.get("yaml")
    texts.extend(
        str(t)
        for t in (yaml_inputs if isinstance(yaml_inputs, list) else [yaml_inputs] if yaml_inputs else [])
    )
    objects: list[Any] = list(inputs.get("objs") or [])
    try:
        for text in texts:
            objects.extend(d for d in yaml.safe_load_all(text) if d is not None)
    except yaml.YAMLError as exc:
        return f"manifest is not valid YAML ({exc}): its objects were not planned"
    out: list[dict[str, Any]] = []
    for obj in objects:
        if isinstance(obj, dict) and str(obj.get("kind", "")).endswith("List") and "items" in obj:
            out.extend(i for i in obj["items"] if isinstance(i, dict))
        elif isinstance(obj, dict):
            out.append(obj)
    return out


def _returning(response: Any, value: Mapping[str, Any]) -> Any:
    """Set an invoke or call response's ``return`` (a Python keyword, so not a kwarg)."""
    getattr(response, "return").CopyFrom(struct(value))
    return response


def _source(request: Any) -> tuple[str, int] | None:
    pos = request.sourcePosition
    if not pos.uri or not pos.uri.startswith("file:"):
        return None
    return str(Path(unquote(urlparse(pos.uri).path))), int(pos.line)


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
