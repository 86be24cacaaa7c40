"""Mock outputs for the edge's Route 53 objects: health check ids (UUIDs, as Route 53 gives)
and record ids/fqdns in the provider's form.
"""

from __future__ import annotations

from typing import Any

from skyfleet.plan.mocks import MockContext


def outputs(typ: str, name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any] | None:
    if typ == "aws:route53/healthCheck:HealthCheck":
        h = ctx.uid(f"hc/{name}", 32)
        hc_id = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
        return {"id": hc_id, "arn": f"arn:aws:route53:::healthcheck/{hc_id}"}
    if typ == "aws:route53/record:Record":
        record = str(inputs.get("name", name)).rstrip(".")
        parts = [str(inputs.get("zoneId", "")), record, str(inputs.get("type", ""))]
        if inputs.get("setIdentifier"):
            parts.append(str(inputs["setIdentifier"]))
        return {"id": "_".join(parts), "fqdn": record}
    return None
