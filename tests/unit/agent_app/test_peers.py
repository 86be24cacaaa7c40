"""Which broken connections mean the peer site fell silent (the kernel gave up on it), built as
httpx raises them: its error, from httpcore's, from anyio's, from the socket's."""

from __future__ import annotations

import errno
import os

import anyio
import httpcore
import httpx
import pytest

from agent_app.fleet.peers import fell_silent


def raised_through_the_stack(cause: BaseException | None) -> httpx.HTTPError:
    """The exception httpx raises for a read that failed with ``cause`` (None: anyio's bare
    "broken" with nothing under it)."""
    try:
        try:
            try:
                if cause is None:
                    raise anyio.BrokenResourceError
                raise anyio.BrokenResourceError from cause
            except anyio.BrokenResourceError as exc:
                raise httpcore.ReadError(str(exc)) from exc
        except httpcore.ReadError as exc:
            raise httpx.ReadError(str(exc)) from exc
    except httpx.ReadError as exc:
        return exc
    raise AssertionError("unreachable")


def os_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


@pytest.mark.parametrize("code", [errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN])
def test_a_connection_the_kernel_gave_up_on_means_a_silent_peer(code: int) -> None:
    assert fell_silent(raised_through_the_stack(os_error(code)))


@pytest.mark.parametrize("code", [errno.ECONNRESET, errno.EPIPE])
def test_a_connection_the_peer_reset_or_closed_does_not(code: int) -> None:
    assert not fell_silent(raised_through_the_stack(os_error(code)))
    assert not fell_silent(raised_through_the_stack(None))
    assert not fell_silent(httpx.RemoteProtocolError("Server disconnected without sending a response."))
