"""The compliance policy pack (see __main__.py for the entry point, rules/ for the rules)."""
