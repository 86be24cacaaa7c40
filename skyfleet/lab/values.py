"""What the lab delivers where a plan has a secret, and how it reaches the plan's endpoints.

**Secrets.** A plan holds secret values it cannot know offline (placeholders for stack
secrets, mock values for generated passwords). The lab replaces each *distinct* plan value
with one value of its own, everywhere that plan value appears: a cache's AUTH token and the
Secrets Manager entry the tasks read it from are the same value in the plan (both come from
one generated password), so they are the same value here too. If a plan wired two different
secrets into the cache and its clients, they differ here as well, and AUTH fails as it would
after ``pulumi up``. Managed services register what they serve for a plan value (the
instance's AUTH string, its CA certificate); everything else is generated.

**Endpoints.** Env values are delivered verbatim, except endpoint addresses that cannot be
served locally as they are (an IP inside a cloud VPC): those are rewritten through one
explicit table, which ``skyfleet lab status`` prints. Names are not rewritten: the lab's DNS
answers them (``skyfleet.lab.dns``).
"""

from __future__ import annotations

import secrets as random
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel

# The placeholder the offline plan gives a stack's secret config key (infra.config).
STACK_SECRET_PREFIX = "offline-plan-secret:"
API_KEYS_CONFIG = "skyfleet:apiKeys"
# The lab's clients, one API key each: a site rate-limits per key (its fleet's rateLimitPerMinute), so
# a drill's load is spread over many clients as real traffic is.
CLIENTS = 32


class Rewrite(BaseModel):
    """One endpoint address the lab serves at another address."""

    site: str
    what: str  # "Memorystore primary endpoint", ...
    plan: str  # host:port as the plan gives it
    lab: str  # host:port the lab serves it at


@dataclass
class LabValues:
    """Secret values by plan value, and the endpoint rewrites, for one lab."""

    api_keys: list[str]
    _secrets: dict[str, str] = field(default_factory=dict)
    rewrites: list[Rewrite] = field(default_factory=list)

    @classmethod
    def new(cls) -> LabValues:
        return cls(api_keys=[f"sk-lab-{random.token_urlsafe(32)}" for _ in range(CLIENTS)])

    def serve(self, plan_value: object, lab_value: str) -> None:
        """A managed service (or the lab's client key set) answers for ``plan_value``."""
        self._secrets[str(plan_value)] = lab_value

    def secret(self, plan_value: object) -> str:
        """The lab's value for a plan's secret value (generated once per distinct value)."""
        key = str(plan_value)
        if key not in self._secrets:
            if key == f"{STACK_SECRET_PREFIX}{API_KEYS_CONFIG}":
                # Every site's stack secret apiKeys: one client key set for the fleet, in the
                # stack config's own form (comma-separated).
                self._secrets[key] = ",".join(self.api_keys)
            else:
                self._secrets[key] = random.token_hex(20)
        return self._secrets[key]

    def rewrite(self, site: str, what: str, plan: str, lab: str) -> str:
        self.rewrites.append(Rewrite(site=site, what=what, plan=plan, lab=lab))
        return lab

    def rewrite_env(self, site: str, value: str) -> str:
        """``value`` with every rewritten endpoint of ``site`` replaced."""
        for r in self.rewrites:
            if r.site == site and r.plan in value:
                value = value.replace(r.plan, r.lab)
        return value

    def known(self) -> Iterable[str]:
        return self._secrets.values()
