"""Optional TLS under every vmstore connection, and the switch that turns it on live.

The cluster-key handshake (auth.py) always runs, inside TLS when TLS is on:
TLS adds privacy and the certificate check; the key still decides who
belongs. Each host has a certificate and key signed by the cluster's CA,
naming the addresses peers dial (IP or DNS subject alternative names); both
ends verify the other's certificate against the CA (mutual TLS).

Modes, per process (``[tls] mode`` in vmstore.toml):

``off``       plaintext out; plaintext in.
``on``        TLS out, falling back to plaintext only when the peer closes the
              TLS handshake unanswered (a peer still ``off``); both in. A bad
              certificate never falls back.
``required``  TLS out; TLS in, a plaintext connection is refused.

Turning TLS on in a running cluster (README, "TLS"): give every host its
certificate, set ``on`` everywhere and restart daemons one at a time (mounts
reload with SIGHUP); then set ``required`` and do the same. Every mix of
neighbouring modes interoperates, so no step needs downtime.

Promise: with ``required`` no byte of a vmstore frame travels in the clear
to or from this process; a peer whose certificate the CA did not sign is
refused whatever the mode.

The settings are the process's (``configure``, once at start-up): every
connection a process makes or accepts uses the same certificate.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import trio

from vmstore.dfs.errors import AuthenticationFailed, ConfigError, PeerUnavailable
from vmstore.dfs.log_fields import about

log = logging.getLogger(__name__)

TLS_MODES = ("off", "on", "required")
_TLS_RECORD_HANDSHAKE = 0x16  # the first byte of every TLS ClientHello
_CLOSED_DURING_HANDSHAKE = (ssl.SSLEOFError, ssl.SSLZeroReturnError, trio.BrokenResourceError,
                            ConnectionResetError)


@dataclass(frozen=True)
class TlsSettings:
    mode: str = "off"
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None


class PeerSpeaksNoTls(PeerUnavailable):
    """The peer closed the TLS handshake unanswered: it is not (yet) speaking TLS."""


class ReplayStream(trio.abc.Stream):
    """A stream whose first bytes were already read (to sniff TLS) and are given again."""

    def __init__(self, stream: trio.abc.Stream, already_read: bytes | bytearray) -> None:
        self.stream = stream
        self._already_read = already_read

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._already_read:
            data, self._already_read = self._already_read, b""
            return data
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


class TransportSecurity:
    """The process's TLS contexts, built once from ``TlsSettings``."""

    def __init__(self, settings: TlsSettings) -> None:
        if settings.mode not in TLS_MODES:
            raise ConfigError(f"[tls] mode {settings.mode!r} is not one of"
                              f" {', '.join(TLS_MODES)}")
        self.mode = settings.mode
        self._client_context: ssl.SSLContext | None = None
        self._server_context: ssl.SSLContext | None = None
        if self.mode != "off":
            self._client_context = _context(settings, ssl.Purpose.SERVER_AUTH)
            self._server_context = _context(settings, ssl.Purpose.CLIENT_AUTH)

    async def connector_stream(self, stream: trio.abc.Stream, host: str) -> trio.abc.Stream:
        """The stream to speak on after connecting to ``host``: TLS unless mode is off.

        Raises PeerSpeaksNoTls (mode ``on``: reconnect in plaintext) or
        AuthenticationFailed (a certificate that does not verify).
        """
        if self._client_context is None:
            return stream
        secure = trio.SSLStream(stream, self._client_context, server_hostname=host,
                                https_compatible=False)
        try:
            await secure.do_handshake()
        except ssl.SSLCertVerificationError as error:
            raise AuthenticationFailed(f"{host}'s TLS certificate does not verify:"
                                       f" {error.verify_message}") from None
        except _CLOSED_DURING_HANDSHAKE as error:
            raise PeerSpeaksNoTls(f"{host} closed the TLS handshake"
                                  f" ({str(error) or type(error).__name__})") from None
        except ssl.SSLError as error:
            raise AuthenticationFailed(f"TLS with {host} failed: {error.reason}") from None
        return secure

    async def acceptor_stream(self, stream: trio.abc.Stream, peer: str) -> trio.abc.Stream:
        """The stream to speak on with a peer that connected to us (sniffing its first byte)."""
        if self._server_context is None:
            return stream
        first = await stream.receive_some(1)
        if not first:
            raise PeerUnavailable(f"{peer} closed the connection before a byte")
        replayed = ReplayStream(stream, first)
        if first[0] != _TLS_RECORD_HANDSHAKE:
            if self.mode == "required":
                raise AuthenticationFailed(f"{peer} spoke plaintext; this daemon requires TLS")
            return replayed
        secure = trio.SSLStream(replayed, self._server_context, server_side=True,
                                https_compatible=False)
        try:
            await secure.do_handshake()
        except _CLOSED_DURING_HANDSHAKE as error:  # before SSLError: its EOF kinds are these
            raise PeerUnavailable(f"{peer} left during the TLS handshake"
                                  f" ({str(error) or type(error).__name__})") from None
        except ssl.SSLError as error:
            raise AuthenticationFailed(f"TLS with {peer} failed: {error.reason}") from None
        return secure

    def note_plaintext_fallback(self, peer: str) -> None:
        log.warning("%s speaks no TLS; this connection is plaintext ([tls] mode 'on'; set"
                    " 'required' once every host is 'on')", peer,
                    extra=about("tls_fallback", peer=peer))


def _context(settings: TlsSettings, purpose: ssl.Purpose) -> ssl.SSLContext:
    missing = [name for name in ("cert_file", "key_file", "ca_file")
               if getattr(settings, name) is None]
    if missing:
        raise ConfigError(f"[tls] mode {settings.mode!r} needs {', '.join(missing)}")
    try:
        context = ssl.create_default_context(purpose, cafile=str(settings.ca_file))
        context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"[tls] cannot load certificates ({settings.cert_file},"
                          f" {settings.key_file}, CA {settings.ca_file}): {error}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if purpose is ssl.Purpose.CLIENT_AUTH:
        context.verify_mode = ssl.CERT_REQUIRED  # mutual: connectors show theirs too
    return context


_process_security = TransportSecurity(TlsSettings())


def configure(settings: TlsSettings) -> None:
    """Set this process's TLS (at start-up, before any connection)."""
    global _process_security
    _process_security = TransportSecurity(settings)


def current() -> TransportSecurity:
    return _process_security


def restore(security: TransportSecurity) -> None:
    """Put back what ``current`` returned earlier (for code that borrowed the setting)."""
    global _process_security
    _process_security = security
