"""Where the server under test is: one endpoint per protocol, derived from a URL, and a loopback check.

The endpoint itself, :class:`~generator.serve.control.Target`, lives with the control client that asks it.

Rules, shared by ``python -m generator loadtest --url`` and Locust's ``--host``:

* a bare ``host:port``, or a URL whose scheme matches the protocol (``http://``, ``grpc://``), is the endpoint
  that is loaded; a missing port is Triton's default for the protocol (HTTP 8000, gRPC 8001);
* the protocol is ``--protocol`` when given, else the URL's scheme, else HTTP;
* an ``http://`` URL with protocol gRPC names the server, not the endpoint: gRPC goes to the same host on
  ``grpc_url`` when given, else on port 8001 (Triton's default layout), so
  ``locust --host http://127.0.0.1:8000 --protocol grpc`` loads 127.0.0.1:8001.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from generator.core.errors import LoadTestError
from generator.serve.control import DEFAULT_PORTS, Target

__all__ = ["PROTOCOLS", "is_loopback", "require_loopback", "resolve_target"]

PROTOCOLS = ("http", "grpc")


def resolve_target(url: str | None, protocol: str | None = None, grpc_url: str | None = None) -> Target:
    """Resolve the endpoint to load from a URL and a protocol (see the module docstring for the rules).

    Args:
        url: ``host:port``, ``http://host:port`` or ``grpc://host:port``; None: loopback, default port.
        protocol: ``"http"``, ``"grpc"`` or None (from the URL's scheme, else HTTP).
        grpc_url: The gRPC endpoint to use when ``url`` is an ``http://`` URL and the protocol is gRPC.

    Raises:
        LoadTestError: An unknown protocol or scheme, a scheme that contradicts the protocol, a bad port.
    """
    if protocol is not None and protocol not in PROTOCOLS:
        raise LoadTestError(f"unknown protocol '{protocol}'; use one of: {', '.join(PROTOCOLS)}")
    text = (url or "").strip()
    scheme, rest = _split_scheme(text)
    if scheme not in ("", "http", "grpc"):
        raise LoadTestError(
            f"the URL '{text}' has scheme '{scheme}://', which the harness does not speak; "
            "use http://HOST:PORT or grpc://HOST:PORT"
        )
    chosen = protocol or scheme or "http"
    if scheme == "grpc" and chosen == "http":
        raise LoadTestError(f"the URL '{text}' is a gRPC endpoint but the protocol is HTTP; drop one of them")
    if scheme == "http" and chosen == "grpc":
        if grpc_url:
            return resolve_target(grpc_url, "grpc")
        host, _, _ = _host_port_path(rest, text, DEFAULT_PORTS["http"])
        return Target("grpc", host, DEFAULT_PORTS["grpc"])
    host, port, path = _host_port_path(rest or "127.0.0.1", text, DEFAULT_PORTS[chosen])
    return Target(chosen, host, port, path if chosen == "http" else "")


def _split_scheme(text: str) -> tuple[str, str]:
    if "://" not in text:
        return "", text
    scheme, _, rest = text.partition("://")
    return scheme.lower(), rest


def _host_port_path(rest: str, original: str, default_port: int) -> tuple[str, int, str]:
    try:
        parts = urlsplit(f"//{rest}")
    except ValueError as error:  # e.g. an unclosed [IPv6 bracket
        raise LoadTestError(
            f"the URL '{original}' does not parse ({error}); write it as HOST:PORT, e.g. 127.0.0.1:8000"
        ) from error
    try:
        port = parts.port
    except ValueError as error:
        raise LoadTestError(
            f"the URL '{original}' has a bad port ({error}); write it as HOST:PORT"
        ) from error
    host = parts.hostname
    if not host:
        raise LoadTestError(f"the URL '{original}' names no host; write it as HOST:PORT, e.g. 127.0.0.1:8000")
    return host, port or default_port, parts.path.rstrip("/")


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address (127.0.0.0/8 or ::1).

    A host name that does not resolve is not loopback.
    """
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def require_loopback(target: Target, allow_remote: bool) -> None:
    """Refuse a target that is not on this machine unless the user allowed it.

    Raises:
        LoadTestError: ``target`` is not loopback and ``allow_remote`` is False.
    """
    if not allow_remote and not is_loopback(target.host):
        raise LoadTestError(
            f"{target.address} is not on this machine; load-testing another host must be deliberate: "
            "pass --allow-remote"
        )
