"""TLS under the wire, on real loopback sockets: each mode against each, bad certificates."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.unit.test_rpc import KEY, ROLES, echo_handler
from vmstore.cli.tls_command import create_ca, issue_host_certificate
from vmstore.dfs.errors import AuthenticationFailed, PeerUnavailable
from vmstore.dfs.protocol.messages import AttrsReply, ClientToMasterGetAttr
from vmstore.dfs.protocol.rpc import open_connection, serve_connections
from vmstore.dfs.protocol.tls import TlsSettings, TransportSecurity


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    create_ca(directory)
    issue_host_certificate(directory, "host1", ["127.0.0.1", "localhost"])
    other = directory / "other"
    create_ca(other)  # a CA the cluster does not trust
    issue_host_certificate(other, "stranger", ["127.0.0.1"])
    return directory


def security(certificates: Path, mode: str, host: str = "host1",
             ca_directory: Path | None = None) -> TransportSecurity:
    directory = ca_directory or certificates
    return TransportSecurity(TlsSettings(mode, directory / f"{host}.crt",
                                         directory / f"{host}.key", directory / "ca.crt"))


async def call_through(server: TransportSecurity, client: TransportSecurity) -> str:
    """Serve with one, call with the other; the client's stream type (TLS or not)."""
    failure: Exception | None = None
    stream = ""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_connections(
            "127.0.0.1", 0, KEY, ROLES, echo_handler, security=server, task_status=task_status))
        try:
            async with open_connection("127.0.0.1", port, KEY, "client",
                                       security=client) as connection:
                reply, _ = await connection.call(ClientToMasterGetAttr(inode=5),
                                                 reply_type=AttrsReply)
                assert reply.attrs.inode == 5
                stream = type(connection.frames.stream).__name__
        except (AuthenticationFailed, PeerUnavailable) as error:
            failure = error
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return stream


@pytest.mark.parametrize(("server_mode", "client_mode", "stream"), [
    ("required", "required", "SSLStream"),
    ("required", "on", "SSLStream"),
    ("on", "required", "SSLStream"),
    ("on", "on", "SSLStream"),
    ("on", "off", "SocketStream"),  # an "on" server still takes plaintext
    ("off", "on", "SocketStream"),  # an "on" client falls back to a server still off
])
async def test_neighbouring_modes_interoperate(certificates: Path, server_mode: str,
                                               client_mode: str, stream: str,
                                               expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.protocol.rpc", "refused connection")
    expected_logs.allow("vmstore.dfs.protocol.tls", "speaks no TLS")
    assert await call_through(security(certificates, server_mode),
                              security(certificates, client_mode)) == stream


async def test_a_plaintext_client_is_refused_where_tls_is_required(
        certificates: Path, expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.protocol.rpc", "refused connection")
    with pytest.raises(PeerUnavailable, match="handshake with 127.0.0.1:.* failed"):
        await call_through(security(certificates, "required"), security(certificates, "off"))


async def test_a_required_client_does_not_fall_back_to_plaintext(
        certificates: Path, expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.protocol.rpc", "refused connection")
    with pytest.raises(PeerUnavailable, match="closed the TLS handshake"):
        await call_through(security(certificates, "off"), security(certificates, "required"))


@pytest.mark.parametrize("side", ["server", "client"])
async def test_a_certificate_from_another_ca_is_refused_both_ways(
        certificates: Path, side: str, expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.protocol.rpc", "refused connection")
    trusted = security(certificates, "required")
    # The stranger trusts our CA, but its own certificate is signed by another.
    stranger = TransportSecurity(TlsSettings(
        "required", certificates / "other" / "stranger.crt",
        certificates / "other" / "stranger.key", certificates / "ca.crt"))
    server, client = (stranger, trusted) if side == "server" else (trusted, stranger)
    with pytest.raises((AuthenticationFailed, PeerUnavailable)):
        await call_through(server, client)


def test_tls_without_its_files_is_a_config_error(certificates: Path) -> None:
    with pytest.raises(Exception, match=r"\[tls\] mode 'on' needs cert_file, key_file"):
        TransportSecurity(TlsSettings("on", None, None, certificates / "ca.crt"))
    with pytest.raises(Exception, match="cannot load certificates"):
        TransportSecurity(TlsSettings("on", certificates / "ca.crt",
                                      certificates / "nope.key", certificates / "ca.crt"))
