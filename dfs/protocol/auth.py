"""Mutual challenge-response authentication: each peer proves its own credential.

A peer's credential is derived from the cluster key and who it is, as cephx
issues a key per daemon: HMAC(cluster key, "chunkserver:" + its uuid) for a
chunkserver, HMAC(cluster key, role) for a client, an admin or a master
(``credential``). The connector names its role and, a chunkserver, its uuid;
both sides then prove they hold *that* credential by an HMAC over two fresh
nonces, one from each side, so nothing on the wire can be replayed on another
connection and no key travels. The acceptor (a master or a chunkserver, which
hold the cluster key) derives the credential of whoever the hello names, so
the role and uuid a connection carries afterwards (``Connection.role``,
``Connection.identity``) are what it proved, not what it claimed. The
connector proves itself only after the acceptor has, so a fake acceptor
learns nothing useful.

    connector                          acceptor
    AuthHello(role, nonce_c, identity) ──▶      c = credential(k, role, identity)
                                ◀──    AuthChallenge(nonce_a, HMAC(c, "acceptor"|nonce_c|nonce_a))
    AuthProof(HMAC(c, "connector"|nonce_a|nonce_c)) ──▶
                                ◀──    AuthAccepted

Role-only credential files (``vmstore credential issue``, issue 19): a host
need not hold the cluster key. A client's file holds the client credential
only, so it cannot act as a chunkserver, a master or an admin; a chunkserver's
holds its own credential (to the master), the peer credential (chunkserver to
chunkserver, role ``peer``), the client credential (to check its clients) and
the capability keys (to check tokens), and nothing a master or an admin proves.
Each holds one value per accepted cluster key, so rotation works as below once
the files are issued again. Every role's credential is what it was; ``peer`` is
new in protocol version 5 (chunkserver links between themselves proved
``chunkserver`` before, which needs the key to check any uuid).

Caveats: the acceptor proves it holds the connector's credential, so a
connector knows its peer holds the cluster key or that same credential (two
clients share theirs). A holder of the cluster key can still derive every
credential: per-daemon credentials bind a connection to one identity, and the
master holds each identity to the replicas it reported (one live registration
per chunkserver uuid, ``dfs.master.chunkserver_service``); they do not make a
host that holds the key less than an insider. Protocol version 4: peers of
version 3 proved the bare cluster key and cannot connect to these.

Key rotation (``vmstore key rotate``): a key file holds one hex key per line.
The first is this process's *current* key: an acceptor proves itself and
checks connectors with it. Every line is *accepted*: a connector takes the
first accepted key whose acceptor proof matches, and proves itself with that
same key. So while every host holds both the old and the new key, hosts that
already made the new key current and hosts that did not still connect both
ways: add the new key everywhere, then make it current everywhere, then
retire the old one, one host at a time, with no restart -- processes that
read a key file notice a change within KEY_FILE_CHECK_INTERVAL_S.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from vmstore.dfs.constants import KEY_FILE_CHECK_INTERVAL_S, KEYS_PER_FILE_MAX
from vmstore.dfs.errors import AuthenticationFailed, ConfigError

log = logging.getLogger(__name__)

NONCE_BYTES = 32
KEY_BYTES_MIN = 32
ROLES = frozenset({"client", "chunkserver", "master", "admin", "peer"})
# What a credential file of each kind lets its holder prove (``issue`` in cli).
CREDENTIAL_KINDS: dict[str, tuple[str, ...]] = {
    "client": ("client",),
    "admin": ("admin",),
    "chunkserver": ("chunkserver", "peer", "client"),
}
CREDENTIAL_HEADER = "vmstore-credential 1"
CAPABILITY_SECRET = "capability"  # a chunkserver file's capability keys, by this name
IDENTITY_CHARS_MAX = 64  # a chunkserver's uuid is 36


def credential(key: bytes, role: str, identity: str = "") -> bytes:
    """The credential of ``role`` (a chunkserver: of the one whose uuid is ``identity``)
    under cluster key ``key``: what that peer proves it holds at every handshake."""
    assert role in ROLES, role
    name = credential_name(role, identity)
    return hmac.new(key, b"vmstore credential " + name.encode(), hashlib.sha256).digest()


def credential_name(role: str, identity: str = "") -> str:
    return f"{role}:{identity}" if role == "chunkserver" else role


def claim_problem(role: str, identity: str) -> str:
    """Why a hello's claim cannot be checked ("" if it can): a known role; a uuid for a
    chunkserver (which chunkserver it is, is what it proves), none for the others."""
    if role not in ROLES:
        return f"role {role!r} is not a vmstore role"
    if role != "chunkserver":
        return "" if not identity else f"a {role} names no identity (named {identity[:64]!r})"
    if not identity or len(identity) > IDENTITY_CHARS_MAX or not identity.isprintable():
        return "a chunkserver must name its uuid"
    return ""


def acceptor_proof(key: bytes, connector_nonce: bytes, acceptor_nonce: bytes) -> bytes:
    return hmac.new(key, b"acceptor" + connector_nonce + acceptor_nonce, hashlib.sha256).digest()


def connector_proof(key: bytes, connector_nonce: bytes, acceptor_nonce: bytes) -> bytes:
    return hmac.new(key, b"connector" + acceptor_nonce + connector_nonce, hashlib.sha256).digest()


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def check_nonce(nonce: bytes, who: str) -> None:
    if len(nonce) != NONCE_BYTES:
        raise AuthenticationFailed(f"{who} sent a nonce of {len(nonce)} bytes")


def proofs_match(expected: bytes, received: bytes) -> bool:
    return hmac.compare_digest(expected, received)


def generate_key_file(path: Path) -> None:
    """Write a new random cluster key, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as key_file:
        key_file.write(os.urandom(KEY_BYTES_MIN).hex() + "\n")


@dataclass(frozen=True)
class ClusterKeys:
    current: bytes
    accepted: tuple[bytes, ...]  # the current key first


@dataclass(frozen=True)
class RoleCredentials:
    """A credential file's contents: what one kind of peer may prove, never the key.
    ``secrets``: credential name (``credential_name``, or CAPABILITY_SECRET) -> one
    value per accepted cluster key, the current key's first."""

    kind: str  # a CREDENTIAL_KINDS key
    identity: str  # a chunkserver's uuid; "" for the other kinds
    secrets: dict[str, tuple[bytes, ...]]

    def describe(self) -> str:
        return f"{self.kind} credential" + (f" of {self.identity}" if self.identity else "")


# What a connection is given to authenticate with: a key read once (followed
# through the process's key file, see keys_for), explicit keys, or a credential file's.
KeyMaterial = bytes | ClusterKeys | RoleCredentials
Material = ClusterKeys | RoleCredentials


def fingerprint(key: bytes) -> str:
    """A short name for a key that reveals nothing of it (to compare hosts' key files)."""
    return hashlib.sha256(b"vmstore key fingerprint" + key).hexdigest()[:16]


def parse_material(text: str, path: Path) -> Material:
    """A key file's keys, or a credential file's credentials (by its first line)."""
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if lines and lines[0] == CREDENTIAL_HEADER:
        return parse_credentials(lines[1:], path)
    return parse_keys(text, path)


def parse_credentials(lines: list[str], path: Path) -> RoleCredentials:
    """``kind KIND [UUID]``, then ``NAME HEX [HEX...]`` lines (format_credentials)."""
    fields = lines[0].split() if lines else []
    if len(fields) not in (2, 3) or fields[0] != "kind" or fields[1] not in CREDENTIAL_KINDS:
        raise ConfigError(f"credential file {path}: its second line is not 'kind client',"
                          " 'kind admin' or 'kind chunkserver UUID'")
    kind, identity = fields[1], (fields[2] if len(fields) == 3 else "")
    if (kind == "chunkserver") != bool(identity):
        raise ConfigError(f"credential file {path}: a chunkserver credential names its uuid,"
                          " no other does")
    secrets: dict[str, tuple[bytes, ...]] = {}
    for line in lines[1:]:
        name, *values = line.split()
        try:
            secrets[name] = tuple(bytes.fromhex(value) for value in values)
        except ValueError:
            raise ConfigError(f"credential file {path}: {name} is not hex") from None
        if not values or len(values) > KEYS_PER_FILE_MAX:
            raise ConfigError(f"credential file {path}: {name} has {len(values)} values")
    missing = [credential_name(role, identity) for role in CREDENTIAL_KINDS[kind]
               if credential_name(role, identity) not in secrets]
    if missing:
        raise ConfigError(f"credential file {path} lacks {', '.join(missing)}")
    return RoleCredentials(kind=kind, identity=identity, secrets=secrets)


def format_credentials(credentials: RoleCredentials) -> str:
    head = f"kind {credentials.kind} {credentials.identity}".rstrip()
    body = [f"{name} {' '.join(value.hex() for value in values)}"
            for name, values in credentials.secrets.items()]
    return "\n".join([f"# {credentials.describe()}: not the cluster key (vmstore credential"
                      " issue)", CREDENTIAL_HEADER, head, *body, ""])


def credentials_for(key: KeyMaterial, role: str, identity: str = "") -> tuple[bytes, ...]:
    """The credentials of ``role`` (and ``identity``) this process can prove, one per
    accepted key, current first; AuthenticationFailed, naming why, if it holds a
    credential file of another kind (a client's cannot act as a chunkserver)."""
    material = material_for(key)
    if isinstance(material, ClusterKeys):
        return tuple(credential(candidate, role, identity) for candidate in material.accepted)
    found = material.secrets.get(credential_name(role, identity))
    if found is None or role not in CREDENTIAL_KINDS[material.kind]:
        who = f"chunkserver {identity}" if role == "chunkserver" else role
        raise AuthenticationFailed(f"this process holds a {material.describe()}, which"
                                   f" cannot act as {who} (issue one of that role with"
                                   " vmstore credential issue)")
    return found


def parse_keys(text: str, path: Path) -> ClusterKeys:
    """A key file's text: hex keys, one per line (blank lines and # comments allowed)."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            key = bytes.fromhex(line)
        except ValueError:
            raise ConfigError(f"cluster key file {path} line {number} is not a hex key"
                              ) from None
        if len(key) < KEY_BYTES_MIN:
            raise ConfigError(f"cluster key in {path} line {number} is {len(key)} bytes;"
                              f" at least {KEY_BYTES_MIN}")
        if key not in keys:
            keys.append(key)
    if not keys:
        raise ConfigError(f"cluster key file {path} does not hold a hex key")
    if len(keys) > KEYS_PER_FILE_MAX:
        raise ConfigError(f"cluster key file {path} holds {len(keys)} keys; at most"
                          f" {KEYS_PER_FILE_MAX} (retire the old ones)")
    return ClusterKeys(current=keys[0], accepted=tuple(keys))


def load_keys(path: Path) -> ClusterKeys:
    """Read the key file (not a credential file); refuse one others can read."""
    material = load_material(path)
    if not isinstance(material, ClusterKeys):
        raise ConfigError(f"{path} is a {material.describe()}, not the cluster key file")
    return material


def load_material(path: Path) -> Material:
    """Read the key or credential file; refuse one others can read (it opens disks)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not text"
        raise ConfigError(f"cannot read cluster key file {path}: {reason}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"cluster key file {path} is readable by group or others (mode {mode & 0o777:o});"
            " run: chmod 600 " + str(path)
        )
    return parse_material(text, path)


def load_key(path: Path) -> bytes:
    """The key file's current key."""
    return load_keys(path).current


class KeyFile:
    """A key file whose keys are re-read when it changes (a rotation step).

    A file that turns unreadable or invalid is logged and ignored: the keys
    last read stay in force, so a half-copied file cannot lock a host out.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys = load_material(path)
        self._signature = self._stat()
        self._checked_s = time.monotonic()

    def _stat(self) -> tuple[float, int, int]:
        status = self.path.stat()
        return status.st_mtime, status.st_size, status.st_ino

    def keys(self) -> Material:
        now = time.monotonic()
        if now - self._checked_s < KEY_FILE_CHECK_INTERVAL_S:
            return self._keys
        self._checked_s = now
        try:
            signature = self._stat()
            if signature != self._signature:
                keys = load_material(self.path)
                self._signature = signature
                if keys != self._keys:
                    log.info("cluster key file %s changed: %s", self.path, describe(keys))
                self._keys = keys
        except OSError as error:
            log.error("cluster key file %s: %s; keeping the keys read before", self.path,
                      error.strerror)
        except ConfigError as error:  # its message names the file
            log.error("%s; keeping the keys read before", error.message)
        return self._keys


_process_key_file: KeyFile | None = None


def describe(material: Material) -> str:
    if isinstance(material, ClusterKeys):
        return f"current key {fingerprint(material.current)}, {len(material.accepted)} accepted"
    return material.describe()


def use_key_file(path: Path) -> bytes:
    """Make ``path`` this process's key file (followed as it rotates): a cluster key
    file (its current key is returned) or a credential file (a stand-in is; every
    use goes through ``material_for``, which finds the file's credentials)."""
    global _process_key_file
    _process_key_file = KeyFile(path)
    material = _process_key_file.keys()
    if isinstance(material, ClusterKeys):
        return material.current
    return b"credential file " + str(path).encode()


def material_for(key: KeyMaterial) -> Material:
    """What to prove with for ``key``: given keys or credentials as they are; a key
    read once is replaced by the process's key file as it is now, if the process
    reads one (the current key may have rotated since); else that key alone."""
    if isinstance(key, ClusterKeys | RoleCredentials):
        return key
    if _process_key_file is not None:
        return _process_key_file.keys()
    return ClusterKeys(current=key, accepted=(key,))


def keys_for(key: KeyMaterial) -> ClusterKeys:
    """The cluster keys for ``key`` (``material_for``); ConfigError for a credential
    file: only a master signs, and it needs the cluster key file."""
    material = material_for(key)
    if not isinstance(material, ClusterKeys):
        raise ConfigError(f"this process holds a {material.describe()}, not the cluster key"
                          " file, which a master needs")
    return material
