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

    @property
    def mandatory(self) -> int:
        return sum(f.mandatory for f in self.findings)


class Report(BaseModel):
    pack: str
    pack_version: str
    rules: list[RuleInfo]
    stacks: list[StackResult]
    seconds: float = 0.0

    @property
    def mandatory(self) -> int:
        return sum(s.mandatory for s in self.stacks)

    @property
    def advisory(self) -> int:
        return sum(len(s.findings) - s.mandatory for s in self.stacks)

    def exit_code(self) -> int:
        return 1 if self.mandatory else 0
