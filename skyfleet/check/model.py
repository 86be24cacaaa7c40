"""The gate's verdict: what every report format (terminal, JSON, SARIF, JUnit) is written from."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RuleInfo(BaseModel):
    """A policy as the pack describes it in GetAnalyzerInfo."""

    id: str
    description: str
    kind: str
    severity: str
    enforcement: str
    remediation: str = ""
    controls: list[str] = Field(default_factory=list)
    url: str = ""


class Finding(BaseModel):
    """One diagnostic returned by Analyze or AnalyzeStack."""

    stack: str
    rule: str
    enforcement: str
    severity: str
    urn: str
    resource_type: str
    resource_name: str
    message: str
    remediation: str = ""
    preview_unknown: bool = False

    @property
    def mandatory(self) -> bool:
        return self.enforcement == "mandatory"


class AppliedExclusion(BaseModel):
    """A rule the pack did not apply to a resource because of a justified exclusion."""

    stack: str
    rule: str
    urn: str
    reason: str


class UnexpandedComponent(BaseModel):
    """A component whose children the offline plan could not produce, so no rule saw them."""

    stack: str
    type: str
    name: str
    urn: str
    reason: str
    # Types of the children its declared outputs refer to (stand-ins that were not checked).
    children: list[str] = Field(default_factory=list)


class ToolError(BaseModel):
    """Why the gate could not give a verdict (exit code 2), and where, when that is known."""

    message: str
    file: str | None = None
    line: int | None = None


class StackResult(BaseModel):
    stack: str
    project: str
    stack_file: str
    environment: str
    profile: str
    preview: bool
    resources: int
    findings: list[Finding] = Field(default_factory=list)
    exclusions: list[AppliedExclusion] = Field(default_factory=list)
    policy_config: dict[str, dict[str, object]] = Field(default_factory=dict)
    rule_levels: dict[str, str] = Field(default_factory=dict)
    # Resources the program only read (Resource.get): state, not resources, so not analyzed.
    reads: int = 0
    unexpanded: list[UnexpandedComponent] = Field(default_factory=list)
    # Invokes the offline plan answered with nothing (no model, no declared result type).
    unanswered: list[str] = Field(default_factory=list)

    @property
    def mandatory(self) -> int:
        return sum(f.mandatory for f in self.findings)


class Report(BaseModel):
    pack: str = ""
    pack_version: str = ""
    rules: list[RuleInfo] = Field(default_factory=list)
    stacks: list[StackResult] = Field(default_factory=list)
    seconds: float = 0.0
    error: ToolError | None = None

    @property
    def mandatory(self) -> int:
        return sum(s.mandatory for s in self.stacks)

    @property
    def advisory(self) -> int:
        return sum(len(s.findings) - s.mandatory for s in self.stacks)

    @property
    def unexpanded(self) -> list[UnexpandedComponent]:
        return [u for s in self.stacks for u in s.unexpanded]

    def exit_code(self) -> int:
        if self.error is not None:
            return 2
        return 1 if self.mandatory else 0
