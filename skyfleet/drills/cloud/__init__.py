"""Faults against real stacks, one module per platform, each acting from the stack's outputs.

Every fault returns what it changed so its rollback can put exactly that back, and every
client is built lazily so ``--dry-run`` needs neither credentials nor network.
"""
