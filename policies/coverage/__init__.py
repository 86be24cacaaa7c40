"""Coverage against checkov: which checkov checks, on the resource types of scope.py, each rule
implements (Rule.checkov), and why the others are not implemented (not_implemented.py). The
table in docs/policies.md is generated from these: `python -m policies.coverage`."""
