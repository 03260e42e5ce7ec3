"""`vmstore tls`: a cluster CA and host certificates, made with openssl(1).

    vmstore tls ca --dir /etc/vmstore/tls
    vmstore tls host host1 --dir /etc/vmstore/tls --address 10.0.0.1 --address host1

The CA's private key (ca.key) signs host certificates; keep it off the
hosts (copy each host only ca.crt, its HOST.crt and HOST.key). Keys are
written mode 0600. Host certificates name the addresses peers dial, and
serve both as server and as client certificates (mutual TLS).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from vmstore.dfs.constants import OPENSSL_TIMEOUT_S, TLS_CA_DAYS, TLS_HOST_DAYS
from vmstore.dfs.errors import ConfigError


def _openssl(*arguments: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ConfigError("openssl is not installed (Debian package openssl)")
    result = subprocess.run([openssl, *arguments], capture_output=True, text=True,
                            timeout=OPENSSL_TIMEOUT_S, env={**os.environ, "OPENSSL_CONF": ""})
    if result.returncode != 0:
        raise ConfigError(f"openssl {arguments[0]} failed: {result.stderr.strip()[-500:]}")


def _new_key(path: Path) -> None:
    path.touch(mode=0o600, exist_ok=False)
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-out", str(path))
    path.chmod(0o600)


def create_ca(directory: Path) -> Path:
    """A new CA in ``directory`` (ca.key, ca.crt); refuses to replace one."""
    directory.mkdir(parents=True, exist_ok=True)
    key, certificate = directory / "ca.key", directory / "ca.crt"
    if key.exists() or certificate.exists():
        raise ConfigError(f"{directory} already has a CA; every host certificate depends on it")
    _new_key(key)
    _openssl("req", "-x509", "-new", "-key", str(key), "-out", str(certificate),
             "-days", str(TLS_CA_DAYS), "-subj", "/CN=vmstore cluster CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return certificate


def issue_host_certificate(directory: Path, name: str, addresses: list[str]) -> Path:
    """HOST.key and HOST.crt in ``directory``, signed by its CA, naming ``addresses``."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"host name {name!r} cannot name a certificate file")
    if not addresses:
        raise ConfigError("a host certificate needs at least one --address peers dial")
    key, certificate = directory / f"{name}.key", directory / f"{name}.crt"
    if not (directory / "ca.key").exists():
        raise ConfigError(f"no CA in {directory}: run vmstore tls ca --dir {directory}")
    _new_key(key)
    names = ",".join(_alternative_name(address) for address in addresses)
    with tempfile.TemporaryDirectory() as scratch:
        request = Path(scratch) / "request.csr"
        extensions = Path(scratch) / "extensions.cnf"
        extensions.write_text(f"subjectAltName={names}\nbasicConstraints=critical,CA:FALSE\n"
                              "keyUsage=critical,digitalSignature\n"
                              "extendedKeyUsage=serverAuth,clientAuth\n")
        _openssl("req", "-new", "-key", str(key), "-out", str(request), "-subj", f"/CN={name}")
        _openssl("x509", "-req", "-in", str(request), "-CA", str(directory / "ca.crt"),
                 "-CAkey", str(directory / "ca.key"), "-CAcreateserial",
                 "-out", str(certificate), "-days", str(TLS_HOST_DAYS),
                 "-extfile", str(extensions))
    return certificate


def _alternative_name(address: str) -> str:
    try:
        return f"IP:{ipaddress.ip_address(address)}"
    except ValueError:
        if not address or any(c in address for c in ",= \n\0"):
            raise ConfigError(f"address {address!r} is neither an IP address nor a DNS"
                              " name") from None
        return f"DNS:{address}"


def run_tls_command(args: argparse.Namespace) -> int:
    if args.action == "ca":
        print(f"CA certificate: {create_ca(args.dir)} (keep ca.key off the hosts)")
        return 0
    if not args.name:
        raise ConfigError("vmstore tls host needs the host's NAME")
    certificate = issue_host_certificate(args.dir, args.name, args.address)
    print(f"host certificate: {certificate}, key: {args.dir / (args.name + '.key')}\n"
          f"on {args.name}, in vmstore.toml:\n"
          f'  [tls]\n  mode = "on"\n  ca_file = "{args.dir / "ca.crt"}"\n'
          f'  cert_file = "{certificate}"\n  key_file = "{args.dir / (args.name + ".key")}"')
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tls", help="make a cluster CA and host certificates for TLS",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Make the certificates [tls] in vmstore.toml names: a CA once, then one"
        " certificate per host, naming the addresses peers use to reach it.",
        epilog="examples:\n  vmstore tls ca --dir /etc/vmstore/tls\n"
        "  vmstore tls host host1 --dir /etc/vmstore/tls --address 10.0.0.1 --address host1")
    parser.add_argument("action", choices=["ca", "host"])
    parser.add_argument("name", nargs="?", help="host: its name (the certificate's file name)")
    parser.add_argument("--dir", type=Path, required=True, help="where the CA lives")
    parser.add_argument("--address", action="append", default=[],
                        help="host: an IP address or DNS name peers dial (repeat)")
    parser.set_defaults(handler=run_tls_command)
