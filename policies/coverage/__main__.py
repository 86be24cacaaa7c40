"""python -m policies.coverage: rewrite the coverage tables in docs/policies.md."""

from policies.coverage.table import DOCS, update_docs

print(f"{DOCS}: {'updated' if update_docs() else 'already current'}")
