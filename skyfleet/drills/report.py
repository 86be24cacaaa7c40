"""A drill's report: ``report.json`` (machines), ``report.md`` (people), ``timeline.png``.

The markdown puts the measured figures next to the published ones users compare them with, so
a drill answers "is our failover as good as the managed services claim?" at a glance.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from skyfleet.drills.context import FaultInfo
from skyfleet.drills.measure import DataCheck, Measurements, TargetResult
from skyfleet.drills.records import LoadRecording
from skyfleet.drills.steady import SteadyWait

# Published failover figures (NOTES.md): what users compare a drill's numbers with.
PUBLISHED_FIGURES: tuple[tuple[str, str], ...] = (
    (
        "Route 53 failover (health checks every 10/30 s, threshold 3)",
        "about 30-90 s, plus a record TTL ≤ 60 s",
    ),
    ("AWS Global Accelerator behind an ALB", "about 60 s"),
    ("GCP external HTTP(S) LB (5 s interval, threshold 2)", "about 10 s"),
    ("Kubernetes probes (period 10 s, threshold 3)", "about 30 s"),
    ("ElastiCache Global Datastore", "RPO under 1 s, RTO about 1 min"),
)


class HypothesisSummary(BaseModel):
    before: bool | None = None
    after: bool | None = None  # chaoslib's check after the method, the fault still applied
    during_checks: int = 0
    during_met: int = 0
    # The bounded waits for the steady state before that check, and after the rollbacks.
    after_method_wait: SteadyWait | None = None
    after_rollback_wait: SteadyWait | None = None


class DrillReport(BaseModel):
    drill: str
    title: str
    file: str
    target: str
    started_at: float
    ended_at: float
    passed: bool
    status: str  # chaoslib journal status: completed | failed | aborted | interrupted
    deviated: bool = False
    aborted: str | None = None
    skipped: str | None = None
    fault: FaultInfo = Field(default_factory=FaultInfo)
    hypothesis: HypothesisSummary = Field(default_factory=HypothesisSummary)
    targets: list[TargetResult] = Field(default_factory=list)
    measurements: Measurements = Field(default_factory=Measurements)
    data: DataCheck | None = None
    rollbacks: list[dict[str, Any]] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    # What the figures describe: the target as it ran (stacks, edge, and for the lab every way
    # it differs from the plans).
    system: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The documented flat keys first (passed, detection_seconds, ...), then the detail."""
        body = self.model_dump(mode="json", exclude={"measurements"})
        return {"passed": self.passed, **self.measurements.model_dump(mode="json"), **body}


def _yes(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "**no**")


def _fmt(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}{unit}" if abs(value) < 10 else f"{value:.1f}{unit}"
    return f"{value}{unit}"


def _system(info: dict[str, Any]) -> list[str]:
    """What the figures describe, said plainly."""
    if not info:
        return []
    lines = ["", "## What these figures describe", ""]
    if info.get("stacks"):
        lines.append(
            f"- stacks: {', '.join(info['stacks'])}"
            + (f" behind `{info['edge']}`" if info.get("edge") else "")
        )
    if info.get("routing"):
        checks = "; ".join(
            f"{site} every {c['interval_seconds']:g} s, {c['failure_threshold']} failures, path {c['path']}"
            for site, c in sorted((info.get("health_checks") or {}).items())
        )
        lines.append(f"- edge routing: {info['routing']}; health checks: {checks}")
    for name, (planned, running) in sorted((info.get("capped") or {}).items()):
        lines.append(f"- replicas capped: {name} runs {running} of the plan's {planned}")
    lines += [f"- differs from the plans: {d}" for d in info.get("deviations") or []]
    if info.get("target") and not info.get("stacks"):
        lines.append(f"- stack `{info.get('stack')}` ({info['target']}, {info.get('environment')})")
    return lines


def render_markdown(report: DrillReport) -> str:
    m = report.measurements
    verdict = "PASSED" if report.passed else ("SKIPPED" if report.skipped else "FAILED")
    lines = [
        f"# Drill report: {report.title}",
        "",
        f"- drill file: `{report.file}`; target: `{report.target}`",
        f"- result: **{verdict}** (chaoslib status `{report.status}`"
        + (", steady state deviated" if report.deviated else "")
        + ")",
    ]
    if report.skipped:
        lines.append(f"- skipped: {report.skipped}")
    if report.aborted:
        lines.append(f"- aborted: {report.aborted}")
    if report.fault.name:
        lines.append(f"- fault: `{report.fault.name}` on site `{report.fault.site or '-'}`")
    lines += [
        "",
        "## Targets",
        "",
        "| metric | target | measured | met |",
        "|---|---|---|---|",
    ]
    for t in report.targets:
        count = not t.metric.endswith(("_seconds", "_ms"))
        shown = _fmt(int(t.value) if count and t.value is not None else t.value)
        lines.append(f"| {t.metric} | ≤ {t.limit:g} | {shown} | {'yes' if t.met else '**no**'} |")
    lines += [
        "",
        "## Measured",
        "",
        "| measure | value |",
        "|---|---|",
        f"| detection (fault → first failed health check) | {_fmt(m.detection_seconds, ' s')} |",
        f"| recovery, RTO (fault → success rate back in tolerance) | {_fmt(m.recovery_seconds, ' s')} |",
        f"| failed / total requests | {m.failed_requests} / {m.total_requests} |",
        f"| error window | {_fmt(m.error_window_seconds, ' s')} |",
        f"| sessions lost (RPO) / turns lost | {_fmt(m.sessions_lost)} / {_fmt(m.turns_lost)} |",
        f"| tasks lost / duplicated / failed | {_fmt(m.tasks_lost)} / {_fmt(m.tasks_duplicated)} / "
        f"{_fmt(m.tasks_failed)} |",
        f"| replication lag p50 / p99 | {_fmt(m.replication_lag_ms.p50, ' ms')} / "
        f"{_fmt(m.replication_lag_ms.p99, ' ms')} ({m.replication_lag_ms.samples} samples) |",
    ]
    for phase in ("before", "during", "after"):
        p = getattr(m.latency_ms, phase)
        lines.append(
            f"| latency {phase} p50 / p99 | {_fmt(p.p50, ' ms')} / {_fmt(p.p99, ' ms')} ({p.count} ok) |"
        )
    lines.append(
        f"| load generator send lag p50 / p99 | {_fmt(m.send_lag_ms.p50, ' ms')} / "
        f"{_fmt(m.send_lag_ms.p99, ' ms')} |"
    )
    if m.served_by_site:
        served = "; ".join(
            f"{phase}: " + ", ".join(f"{s} {n}" for s, n in sorted(c.items()))
            for phase, c in m.served_by_site.items()
            if c
        )
        lines.append(f"| requests served by site | {served} |")
    if m.forwarded_by_site:
        passed = "; ".join(
            f"{phase}: " + ", ".join(f"{s} {n}" for s, n in sorted(c.items()))
            for phase, c in m.forwarded_by_site.items()
        )
        lines.append(f"| of which reached another site first (passed on from) | {passed} |")
    if m.by_regional_name:
        regional = "; ".join(
            f"{phase}: " + ", ".join(f"{s} {n}" for s, n in sorted(c.items()))
            for phase, c in m.by_regional_name.items()
        )
        lines.append(f"| of which the fleet client sent to a site's regional name | {regional} |")
    if m.errors_by_kind:
        lines.append(
            "| failures by kind:status | "
            + ", ".join(f"{k} x{n}" for k, n in sorted(m.errors_by_kind.items()))
            + " |"
        )
    h = report.hypothesis
    lines.append(
        "| steady state: before / after the method / checks during it met | "
        f"{_yes(h.before)} / {_yes(h.after)} / {h.during_met} of {h.during_checks} |"
    )
    for label, wait in (
        ("wait for the steady state after the method (fault applied)", h.after_method_wait),
        ("recovered after the rollback (rollbacks done → steady state holds)", h.after_rollback_wait),
    ):
        if wait is not None:
            shown = _fmt(wait.seconds, " s") if wait.met else f"**not within {wait.timeout_seconds:g} s**"
            lines.append(f"| {label} | {shown} ({wait.checks_text}) |")
    lines += [
        "",
        "## Published figures, for comparison",
        "",
        "| system | published failover |",
        "|---|---|",
        *[f"| {name} | {figure} |" for name, figure in PUBLISHED_FIGURES],
        "",
        f"This drill: detection {_fmt(m.detection_seconds, ' s')}, recovery "
        f"{_fmt(m.recovery_seconds, ' s')}, sessions lost {_fmt(m.sessions_lost)}.",
    ]
    lines += _system(report.system)
    if report.rollbacks:
        lines += ["", "## Rollbacks", ""]
        lines += [f"- `{r.get('name')}`: {r.get('status')}" for r in report.rollbacks]
    if report.notes or (report.data and report.data.notes):
        lines += ["", "## Notes", ""]
        lines += [f"- {n}" for n in report.notes]
        if report.data:
            lines += [f"- {n}" for n in report.data.notes[:20]]
    return "\n".join(lines) + "\n"


_SITE_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def render_timeline(report: DrillReport, recording: LoadRecording, path: Path) -> None:
    """Latency per site (top) and error rate / throughput (bottom), fault and recovery marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(recording.records)
    t0 = recording.started_at or (min((r.sent for r in records), default=report.started_at))
    fig, (ax_lat, ax_err) = plt.subplots(
        2, 1, figsize=(11, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    sites = sorted({r.site or "unknown" for r in records if r.ok})
    for i, site in enumerate(sites):
        colour = _SITE_COLOURS[i % len(_SITE_COLOURS)]
        served = [r for r in records if r.ok and (r.site or "unknown") == site]
        # Sessions living here reached through another site (the fleet passed them on): hollow.
        for passed_on, style, label in (
            (False, {"s": 7, "alpha": 0.7, "color": colour}, f"site {site}"),
            (
                True,
                {"s": 14, "marker": "^", "facecolors": "none", "edgecolors": colour, "alpha": 0.8},
                f"site {site}, passed on from another site",
            ),
        ):
            rows = [r for r in served if bool(r.via) == passed_on]
            if rows or not passed_on:
                ax_lat.scatter(
                    [r.sent - t0 for r in rows],
                    [max(r.latency_ms, 0.1) for r in rows],
                    label=f"{label} ({len(rows)})",
                    **style,  # type: ignore[arg-type]
                )
    failed = [r for r in records if not r.ok]
    if failed:
        ax_lat.scatter(
            [r.sent - t0 for r in failed],
            [max(r.latency_ms, 0.1) for r in failed],
            s=22,
            marker="x",
            color="#d62728",
            label=f"failed ({len(failed)})",
        )
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency (ms, log)")
    ax_lat.grid(True, which="both", alpha=0.25)

    bucket = 0.5
    totals: dict[int, int] = defaultdict(int)
    errors: dict[int, int] = defaultdict(int)
    for r in records:
        k = int((r.scheduled - t0) // bucket)  # by schedule: the open-loop rate is flat
        totals[k] += 1
        errors[k] += 0 if r.ok else 1
    keys = sorted(totals)
    xs = [k * bucket for k in keys]
    ax_err.bar(
        xs,
        [errors[k] / totals[k] * 100 for k in keys],
        width=bucket,
        align="edge",
        color="#d62728",
        alpha=0.8,
        label="error rate (%)",
    )
    ax_err.set_ylim(0, 105)
    ax_err.set_ylabel("failed (% per 0.5 s)")
    ax_rate = ax_err.twinx()
    ax_rate.step(xs, [totals[k] / bucket for k in keys], where="post", color="#555555", lw=1, label="req/s")
    ax_rate.set_ylabel("requests/s scheduled")
    ax_rate.set_ylim(bottom=0)
    ax_err.set_xlabel("seconds since load start")
    ax_err.grid(True, alpha=0.25)

    fault_at = report.fault.at
    marks = []
    if fault_at is not None:
        marks.append((fault_at, "#d62728", "fault"))
        m = report.measurements
        if m.detection_seconds is not None:
            marks.append((fault_at + m.detection_seconds, "#ff7f0e", f"detected +{m.detection_seconds:.2f}s"))
        if m.recovery_seconds is not None:
            marks.append((fault_at + m.recovery_seconds, "#2ca02c", f"recovered +{m.recovery_seconds:.2f}s"))
    if report.fault.restored_at is not None:
        marks.append((report.fault.restored_at, "#7f7f7f", "rolled back"))
    styles = {"fault": ("-", 2.2), "rolled back": ("-", 1.6)}
    for ax in (ax_lat, ax_err):
        for when, colour, label in marks:
            ls, lw = styles.get(label, (":", 1.8))
            ax.axvline(when - t0, color=colour, ls=ls, lw=lw, label=label if ax is ax_lat else None)
    # Legend above the plot, where it hides no data point.
    ax_lat.legend(loc="lower left", bbox_to_anchor=(0, 1.01), fontsize=8, ncol=4, frameon=False)
    verdict = "passed" if report.passed else "FAILED"
    fig.suptitle(
        f"{report.title} — {report.target} — {verdict}: {report.measurements.failed_requests} failed of "
        f"{report.measurements.total_requests}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: DrillReport, recording: LoadRecording | None, directory: Path) -> Path:
    """Write report.json, report.md and, when there was load, timeline.png and requests.jsonl."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    (directory / "report.md").write_text(render_markdown(report))
    if recording is not None and recording.records:
        render_timeline(report, recording, directory / "timeline.png")
        # Every request, one JSON object per line: the raw data behind every figure above.
        with (directory / "requests.jsonl").open("w") as out:
            for r in recording.records:
                out.write(json.dumps(dataclasses.asdict(r)) + "\n")
    return directory
