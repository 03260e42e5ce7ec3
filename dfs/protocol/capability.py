"""Capabilities: the master signs, chunkservers check, for every chunk operation.

Promise: ``check`` accepts a capability only if the master made it (HMAC
with a key derived from the cluster key, compared in constant time), for
exactly this chunk and this operation, of this token format, and it is not
past its expiry by this machine's clock. ``VerifiedCapabilities`` also
refuses one issued by a master of an older generation than the newest it
has seen (fencing across masters, issue 15). Lease epochs are not judged
here: that needs what a chunkserver has seen (``chunkserver.write_fence``).

Design (issue 9, authorization):

* One record, ``messages.Capability``: chunk id, operation (READ or WRITE),
  lease epoch (0 for reads), the session it was issued to (for logs), issue
  and expiry times, and a MAC over all of them. One signing and one
  verification path serve both operations; the operation is inside the MAC,
  so a read capability never opens a write.
* Who issues what (the master):
    - WRITE: with every write chain (``ClientToMasterChunkForWrite``,
      ``ClientToMasterReportBadChain``), only to the file's write-lease
      holder, bound to the lease epoch, living ``lease_expiry_s -
      CLOCK_SKEW_S_MAX`` (``master.lease_manager``). Never to a session of a
      read-only export, nor to an admin connection.
    - READ: inside every ``ChunkLocation`` the master hands a client session
      (``ClientToMasterChunkLocations`` and the write replies), living
      READ_CAPABILITY_LIFE_S; never to admin connections, which only look.
    - READ for a copy: in ``MasterToChunkserverReplicate``, living as long as
      the master waits for the copy; the target presents it to its sources.
* Master generations (``protocol.cluster_identity``; the master epoch: it
  moves forward at every master start and every HA leader's first commit):
  every capability carries its issuer's, inside the MAC (token format 2).
  A chunkserver learns the newest generation from its registration and from
  the capabilities it verifies, and refuses an older one with
  TokenOfOldGeneration naming both; the client fetches a fresh capability
  from the current master, as for an expired one. So a deposed leader's
  capabilities open nothing on a chunkserver that has met its successor.
  Format-1 capabilities (no generation) are refused the same way, never read
  as generation 0: they came from a master before fencing.
* Who checks (the chunkservers), with ``VerifiedCapabilities`` so that a
  capability's MAC is computed once, not on every request:
    - ReadChunk: READ. WriteChunk: WRITE, then the lease epoch fence;
      forwarded down the chain with the client's capability. FlushChunk:
      WRITE of that chunk (forwarded too).
* Clients refresh a capability at half its life (write targets and cached
  read locations alike), so steady I/O never waits for the master and never
  presents an expired capability while clocks agree within CLOCK_SKEW_S_MAX.

Clocks: expiry is wall-clock time of the master, judged by the
chunkserver's clock. The master keeps a lease CLOCK_SKEW_S_MAX longer than
any write capability it issued for it, so clocks that disagree by less than
that (NTP keeps them within milliseconds) cannot let a late write through.

Key rotation: capability keys follow the process's key file (auth): the
master signs with its current key, chunkservers accept a capability signed
with any key they accept, so capabilities keep working through every step of
a rotation.

Caveat: the key derives from the cluster key, so anyone holding the cluster
key can mint capabilities; capabilities limit what an authenticated client
session was granted, they do not protect against a stolen cluster key.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
from collections.abc import Sequence

import msgspec

from vmstore.dfs.constants import READ_CAPABILITY_LIFE_S, VERIFIED_CAPABILITIES_MAX
from vmstore.dfs.errors import (
    ConfigError,
    ReadRefused,
    TokenExpired,
    TokenOfOldGeneration,
    WriteRefused,
)
from vmstore.dfs.protocol import auth
from vmstore.dfs.protocol.messages import Capability

READ = 1
WRITE = 2
OPERATION_NAMES = {READ: "read", WRITE: "write"}
MAC_BYTES = 16
TOKEN_FORMAT = 2  # 2: the master generation is in the token and its MAC
_KEY_PURPOSE = b"vmstore capability v1"
_FIELDS = struct.Struct("<QQQQQQQQ")
_FIELDS_FORMAT_1 = struct.Struct("<QQQQQQ")  # no format, no generation


def capability_key(cluster_key: bytes) -> bytes:
    """A key for capabilities only, so that a MAC never doubles as a handshake proof."""
    return hmac.new(cluster_key, _KEY_PURPOSE, hashlib.sha256).digest()


def _mac(key: bytes, capability: Capability) -> bytes:
    if capability.token_format == 1:  # verified only to be refused by name
        fields = _FIELDS_FORMAT_1.pack(capability.chunk_id, capability.operation,
                                       capability.epoch, capability.session_id,
                                       capability.issued_ns, capability.expires_ns)
        return hmac.new(key, fields, hashlib.sha256).digest()[:MAC_BYTES]
    fields = _FIELDS.pack(capability.token_format, capability.chunk_id, capability.operation,
                          capability.epoch, capability.session_id, capability.issued_ns,
                          capability.expires_ns, capability.generation)
    return hmac.new(key, fields, hashlib.sha256).digest()[:MAC_BYTES]


def sign(key: bytes, *, operation: int, chunk_id: int, session_id: int, issued_ns: int,
         life_ns: int, epoch: int = 0, generation: int = 0) -> Capability:
    assert operation in OPERATION_NAMES, operation
    unsigned = Capability(chunk_id=chunk_id, operation=operation, epoch=epoch,
                          session_id=session_id, issued_ns=issued_ns,
                          expires_ns=issued_ns + life_ns, mac=b"", generation=generation,
                          token_format=TOKEN_FORMAT)
    return msgspec.structs.replace(unsigned, mac=_mac(key, unsigned))


def check(keys: bytes | Sequence[bytes], capability: Capability | None, chunk_id: int,
          operation: int, now_ns: int) -> None:
    """Raise WriteRefused / ReadRefused for a missing, forged or misdirected
    capability, TokenExpired for an old one. ``keys``: the capability keys
    accepted (several while the cluster key is being rotated)."""
    what = OPERATION_NAMES[operation]
    refused = WriteRefused if operation == WRITE else ReadRefused
    if capability is None:
        raise refused(f"{what} of chunk {chunk_id} carries no capability")
    candidates = (keys,) if isinstance(keys, bytes) else keys
    try:
        signed_here = any(hmac.compare_digest(_mac(key, capability), capability.mac)
                          for key in candidates)
    except struct.error:
        raise refused(f"{what} capability for chunk {chunk_id} has fields out of range"
                      ) from None
    if not signed_here:
        raise refused(f"{what} capability for chunk {chunk_id} was not signed by this"
                      " cluster's master")
    if capability.token_format != TOKEN_FORMAT:
        # Format 1 came from a master before generations: the client's master (now
        # upgraded) gives a fresh one.
        raise TokenOfOldGeneration(f"{what} capability for chunk {chunk_id} is of token"
                                   f" format {capability.token_format}, not {TOKEN_FORMAT}"
                                   " (from a master before generations in tokens)")
    if capability.operation != operation:
        allowed = OPERATION_NAMES.get(capability.operation, f"operation {capability.operation}")
        raise refused(f"capability for chunk {capability.chunk_id} allows {allowed}, not {what}")
    if capability.chunk_id != chunk_id:
        raise refused(f"{what} capability is for chunk {capability.chunk_id}, not {chunk_id}")
    if now_ns > capability.expires_ns:
        raise TokenExpired(f"{what} capability for chunk {chunk_id} expired"
                           f" {(now_ns - capability.expires_ns) / 1e9:.1f} s ago")


def _capability_keys(material: auth.Material) -> tuple[bytes, ...]:
    """The capability keys of ``material``, current first: derived from cluster keys, or
    as a chunkserver's credential file holds them (ConfigError for a client's)."""
    if isinstance(material, auth.ClusterKeys):
        return tuple(capability_key(key) for key in material.accepted)
    found = material.secrets.get(auth.CAPABILITY_SECRET)
    if not found:
        raise ConfigError(f"a {material.describe()} holds no capability keys: only a"
                          " chunkserver's (or the cluster key) checks capabilities")
    return found


class _FollowedKeys:
    """Capability keys derived from the cluster keys as they are now: the master
    signs with the current one, chunkservers accept every accepted one, so a
    key rotation (auth) needs no restart."""

    def __init__(self, cluster_key: auth.KeyMaterial) -> None:
        self._cluster_key = cluster_key
        self._derived_from: auth.Material | None = None
        self._derived: tuple[bytes, ...] = ()

    def accepted(self) -> tuple[bytes, ...]:
        keys = auth.material_for(self._cluster_key)
        if keys != self._derived_from:
            self._derived = _capability_keys(keys)
            self._derived_from = keys
        return self._derived

    def current(self) -> bytes:
        return self.accepted()[0]


class VerifiedCapabilities:
    """A chunkserver's check of capabilities, with the MACs it already verified, and
    the owner of the newest master generation it has seen (from its master link's
    registrations and from verified capabilities).

    A client sends the same capability with every request to a chunk for
    tens of seconds; a capability is immutable, so its MAC is checked once
    and later requests cost a set lookup and four comparisons.
    """

    def __init__(self, cluster_key: auth.KeyMaterial) -> None:
        self._keys = _FollowedKeys(cluster_key)
        self._verified: set[Capability] = set()
        self.newest_generation = 0  # of any master seen; only moves forward

    def see_generation(self, generation: int) -> None:
        """A master of ``generation`` was accepted: older ones are fenced from now on."""
        self.newest_generation = max(self.newest_generation, generation)

    def check(self, capability: Capability | None, chunk_id: int, operation: int) -> Capability:
        """Return ``capability`` if it allows ``operation`` on ``chunk_id`` now; else raise."""
        now_ns = time.time_ns()
        if (capability is not None and capability.chunk_id == chunk_id
                and capability.operation == operation and now_ns <= capability.expires_ns
                and capability.generation >= self.newest_generation
                and capability in self._verified):
            return capability  # fast path: verified before
        check(self._keys.accepted(), capability, chunk_id, operation, now_ns)
        assert capability is not None
        if capability.generation < self.newest_generation:
            raise TokenOfOldGeneration(
                f"{OPERATION_NAMES[operation]} capability for chunk {chunk_id} was issued by"
                f" a master of generation {capability.generation}, older than generation"
                f" {self.newest_generation} this chunkserver has seen: fetch a fresh one")
        # Signed by the cluster's master: a newer generation than we knew is a newer master.
        self.see_generation(capability.generation)
        if len(self._verified) >= VERIFIED_CAPABILITIES_MAX:
            self._verified.clear()
        self._verified.add(capability)
        return capability


class CapabilitySigner:
    """The master's issuer of capabilities (one key, the lives of each kind)."""

    def __init__(self, cluster_key: auth.KeyMaterial, write_life_s: float,
                 read_life_s: float = READ_CAPABILITY_LIFE_S, *, generation: int) -> None:
        auth.keys_for(cluster_key)  # ConfigError for a credential file: a master needs the key
        self._keys = _FollowedKeys(cluster_key)
        self.generation = generation  # this master start's (ClusterIdentity.generation)
        self.write_life_ns = int(write_life_s * 1e9)
        self.read_life_ns = int(read_life_s * 1e9)

    def write(self, session_id: int, chunk_id: int, epoch: int) -> Capability:
        return sign(self._keys.current(), operation=WRITE, chunk_id=chunk_id, epoch=epoch,
                    session_id=session_id, issued_ns=time.time_ns(),
                    life_ns=self.write_life_ns, generation=self.generation)

    def read(self, session_id: int, chunk_id: int, life_s: float | None = None) -> Capability:
        life_ns = self.read_life_ns if life_s is None else int(life_s * 1e9)
        return sign(self._keys.current(), operation=READ, chunk_id=chunk_id, session_id=session_id,
                    issued_ns=time.time_ns(), life_ns=life_ns, generation=self.generation)
