"""Assemble docs/benchmarks.md from the per-benchmark results each script writes to
docs/bench/<name>.md, so every figure in it comes from a script run, never by hand."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["plan", "check", "agent_app", "soak", "lab", "fleet"]
HEADER = """# Benchmarks

Every figure below was measured by a script under `benchmarks/` and written to
`docs/bench/<name>.md`; `python benchmarks/collect.py` assembles this page. Each section gives its
date and machine and compares against a peer or baseline measured in the same run, as a ratio.
Re-run a script to refresh its section.

"""


def main() -> None:
    parts = sorted(
        (ROOT / "docs" / "bench").glob("*.md"),
        key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem),
    )
    body = "\n".join(p.read_text().rstrip() + "\n" for p in parts)
    (ROOT / "docs" / "benchmarks.md").write_text(HEADER + body)
    print(f"docs/benchmarks.md: {len(parts)} sections")


if __name__ == "__main__":
    main()
