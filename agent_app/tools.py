"""The agent's tools: a calculator, a clock and a lookup, plus ``start_task``.

``start_task`` is not run here: the agent turns it into an async task on the queue. The
calculator walks a parsed AST instead of calling eval, so a prompt can never run code.
"""

from __future__ import annotations

import ast
import datetime as dt
import operator
from collections.abc import Callable
from typing import Any

START_TASK = "start_task"
MAX_EXPONENT = 100
MAX_DIGITS = 200

GLOSSARY: dict[str, str] = {
    "skyfleet": "Skyfleet runs one containerised AI-agent app on AWS, GCP and on-prem Kubernetes at once.",
    "sqs": "Amazon SQS is AWS's managed message queue; the agent uses it for async tasks on AWS.",
    "pub/sub": "Google Cloud Pub/Sub is GCP's managed messaging service; the agent's queue on GCP.",
    "pubsub": "Google Cloud Pub/Sub is GCP's managed messaging service; the agent's queue on GCP.",
    "nats": "NATS JetStream is the persistent stream the agent uses as its queue on-prem.",
    "redis": "Redis holds sessions, task results and rate-limit counters; replicas carry them across sites.",
    "rpo": "Recovery point objective: how much acknowledged data a failover may lose.",
    "rto": "Recovery time objective: how long a failover may take before service resumes.",
    "dlq": "A dead-letter queue keeps messages that failed too many times, for a human to inspect.",
}

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class ToolError(ValueError):
    """The tool could not run with these arguments; the agent reports it, nothing crashes."""


def _eval(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolError(f"exponent {right} is too large (limit {MAX_EXPONENT})")
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        if isinstance(value, int) and len(str(abs(value))) > MAX_DIGITS:
            raise ToolError("result is too large")
        return value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    raise ToolError("only numbers and + - * / // % ** and parentheses are allowed")


def calculator(expression: str) -> str:
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise ToolError(f"cannot parse {expression!r} as arithmetic") from None
    value = _eval(tree)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ToolError("result is not a finite number")
        if value.is_integer():
            value = int(value)
        else:
            return f"{value:.10g}"
    return str(value)


def clock() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lookup(term: str) -> str:
    key = term.strip().strip("?.!").lower()
    if key in GLOSSARY:
        return GLOSSARY[key]
    raise ToolError(f"no entry for {term.strip()!r}")


def run_tool(name: str, arguments: dict[str, Any]) -> str:
    """Run a synchronous tool; ToolError for bad names or arguments."""
    if name == "calculator":
        return calculator(str(arguments.get("expression", "")))
    if name == "clock":
        return clock()
    if name == "lookup":
        return lookup(str(arguments.get("term", "")))
    raise ToolError(f"unknown tool {name!r}")


def _spec(name: str, description: str, params: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {p: {"type": "string", "description": d} for p, d in params.items()},
                "required": list(params),
            },
        },
    }


TOOL_SPECS: list[dict[str, Any]] = [
    _spec("calculator", "Evaluate an arithmetic expression", {"expression": "e.g. (2+3)*4"}),
    _spec("clock", "The current UTC date and time", {}),
    _spec("lookup", "Look a term up in the Skyfleet glossary", {"term": "the term"}),
    _spec(START_TASK, "Hand long work to a background task; returns its id", {"input": "what to work on"}),
]
