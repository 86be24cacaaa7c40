"""The policy pack as a process, spoken to over the Analyzer gRPC protocol.

Launch mirrors the engine's legacy path for Python packs: ``python -u -m pulumi.policy
<engine-address> .`` from the pack's folder (with the pack's virtualenv when PulumiPolicy.yaml
names one), the port read from the first line of stdout. A pack that exits, fails an RPC or
exceeds the deadline raises `PackError`: the gate reports it as an error, never as a pass.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import yaml
from google.protobuf import empty_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc, plugin_pb2

# The engine raises the message limit the same way (400 MiB).
_GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 400 * 1024 * 1024),
    ("grpc.max_send_message_length", 400 * 1024 * 1024),
]
# No engine runs here; the pack only uses the address for logging, which falls back to stderr.
_NO_ENGINE = "127.0.0.1:0"


class PackError(Exception):
    """The policy pack could not be started, crashed, or did not answer in time."""


def pack_python(pack_dir: Path) -> str:
    """The interpreter the engine would use: the pack's virtualenv if it exists, else ours."""
    manifest = pack_dir / "PulumiPolicy.yaml"
    if not manifest.is_file():
        raise PackError(f"{pack_dir}: no PulumiPolicy.yaml; not a policy pack folder")
    try:
        doc = yaml.safe_load(manifest.read_text()) or {}
    except yaml.MarkedYAMLError as exc:
        line = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise PackError(f"{manifest}: not valid YAML{line}: {exc.problem or exc.context}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PackError(f"{manifest}: cannot be read ({exc})") from None
    if not isinstance(doc, dict):
        raise PackError(f"{manifest}: a YAML {type(doc).__name__}, not a mapping (runtime: python, ...)")
    if not (pack_dir / "__main__.py").is_file():
        raise PackError(f"{pack_dir}: no __main__.py; a Python policy pack's program is its __main__.py")
    runtime = doc.get("runtime")
    name = runtime.get("name") if isinstance(runtime, dict) else runtime
    if name != "python":
        raise PackError(f"{manifest}: runtime is {name!r}; skyfleet check runs python packs")
    options = runtime.get("options", {}) if isinstance(runtime, dict) else {}
    venv = options.get("virtualenv") if isinstance(options, dict) else None
    if venv:
        candidate = pack_dir / str(venv) / "bin" / "python"
        if candidate.exists():
            return str(candidate)
    return sys.executable


class PolicyPackProcess:
    """One running pack and a stub bound to it. Use as a context manager."""

    def __init__(self, pack_dir: Path, *, timeout: float = 60.0) -> None:
        self.pack_dir = pack_dir.resolve()
        self.timeout = timeout
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: grpc.Channel | None = None
        self.stub: Any = None

    def __enter__(self) -> PolicyPackProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        python = pack_python(self.pack_dir)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(
            [python, "-u", "-m", "pulumi.policy", _NO_ENGINE, "."],
            cwd=self.pack_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        port = self._read_port()
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=_GRPC_OPTIONS)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=self.timeout)
        except grpc.FutureTimeoutError:
            self.close()
            raise PackError(
                f"policy pack {self.pack_dir} did not accept connections on port {port}"
            ) from None
        self.stub = analyzer_pb2_grpc.AnalyzerStub(self._channel)

    def _read_port(self) -> int:
        assert self._proc is not None and self._proc.stdout is not None
        holder: list[bytes] = []
        reader = threading.Thread(
            target=lambda: holder.append(self._proc.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(self.timeout)
        line = holder[0].decode(errors="replace").strip() if holder else ""
        if not line.isdigit():
            why = "timed out before printing its port" if reader.is_alive() else f"printed {line!r}"
            self.close()
            raise PackError(f"policy pack {self.pack_dir} failed to start ({why})" + self.stderr_tail())
        threading.Thread(target=self._drain_stdout, daemon=True).start()
        return int(line)

    def _drain_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for _ in iter(self._proc.stdout.readline, b""):
            pass

    def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in iter(self._proc.stderr.readline, b""):
            self._stderr.append(raw.decode(errors="replace").rstrip())

    def stderr_tail(self) -> str:
        lines = [line for line in self._stderr if line]
        return ("\n--- pack stderr ---\n" + "\n".join(lines[-15:])) if lines else ""

    def call(self, method: str, request: Any) -> Any:
        """One RPC with a deadline; any failure becomes a PackError naming the call."""
        if self._proc is not None and self._proc.poll() is not None:
            raise PackError(f"policy pack exited with code {self._proc.returncode}" + self.stderr_tail())
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise PackError(f"policy pack did not answer {method} within {self.timeout:g} s") from None
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            raise PackError(f"policy pack failed in {method}: {detail}" + self.stderr_tail()) from None

    def optional_call(self, method: str, request: Any) -> Any | None:
        """An RPC older packs may not implement (the engine tolerates UNIMPLEMENTED too)."""
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            if hasattr(exc, "code") and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return None
            return self.call(method, request)

    def handshake(self) -> None:
        directory = str(self.pack_dir)
        self.optional_call(
            "Handshake",
            analyzer_pb2.AnalyzerHandshakeRequest(
                engine_address=_NO_ENGINE, root_directory=directory, program_directory=directory
            ),
        )

    def info(self) -> Any:
        return self.call("GetAnalyzerInfo", empty_pb2.Empty())

    def plugin_info(self) -> plugin_pb2.PluginInfo:
        return self.call("GetPluginInfo", empty_pb2.Empty())

    def close(self) -> None:
        """Stop the pack the way it expects (SIGINT ends its serve loop), then make sure."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
