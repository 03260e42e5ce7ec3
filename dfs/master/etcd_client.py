"""The few etcd v3 calls metadata HA needs, over etcd's JSON gateway, under trio.

Why this client: etcd's own Python clients speak gRPC and run on asyncio or
threads, not trio; the JSON gateway (``/v3/kv/*``, ``/v3/lease/*``) is part of
every etcd 3.4 server (Debian's ``etcd-server``) and needs only an HTTP
client. ``httpx.AsyncClient`` is a well-kept one that runs under trio (through
anyio), with per-request deadlines and connection pooling.

Promises:
* Every call has a deadline (``ETCD_CALL_TIMEOUT_S``) and names the endpoint
  and the call when it fails: ``EtcdUnavailable``, which the caller may retry.
* A call that fails on one endpoint is tried once on each other endpoint
  before it is reported; the endpoint that answered is tried first next time.
* A failed request may still have taken effect in etcd (the reply was lost):
  callers make their writes idempotent or check (``MetadataJournal`` does).
* Keys and values are bytes here; base64 and int64-as-string are the
  gateway's encoding and stay inside this module.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from vmstore.dfs.constants import ETCD_CALL_TIMEOUT_S
from vmstore.dfs.errors import EtcdUnavailable


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with ``prefix``."""
    assert prefix and prefix[-1] < 0xFF, prefix
    return prefix[:-1] + bytes([prefix[-1] + 1])


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    # What the failure branch's ranges returned (the success branch has only puts).
    ranges: tuple[tuple[KeyValue, ...], ...]


# Compares and requests for ``txn``, in the gateway's JSON form (built by the helpers below).
Compare = dict[str, Any]
Request = dict[str, Any]


def created_at(key: bytes, revision: int) -> Compare:
    """The key's create_revision is ``revision`` (0: the key does not exist)."""
    return {"key": _b64(key), "result": "EQUAL", "target": "CREATE",
            "create_revision": str(revision)}


def value_is(key: bytes, value: bytes) -> Compare:
    return {"key": _b64(key), "result": "EQUAL", "target": "VALUE", "value": _b64(value)}


def put(key: bytes, value: bytes, lease: int = 0) -> Request:
    request: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        request["lease"] = str(lease)
    return {"request_put": request}


def get(key: bytes, range_end: bytes | None = None) -> Request:
    request = {"key": _b64(key)}
    if range_end is not None:
        request["range_end"] = _b64(range_end)
    return {"request_range": request}


def delete(key: bytes, range_end: bytes | None = None) -> Request:
    request = {"key": _b64(key)}
    if range_end is not None:
        request["range_end"] = _b64(range_end)
    return {"request_delete_range": request}


def _key_values(reply: dict[str, Any]) -> tuple[KeyValue, ...]:
    return tuple(KeyValue(_unb64(kv["key"]), _unb64(kv.get("value", "")),
                          int(kv.get("create_revision", 0)), int(kv.get("mod_revision", 0)),
                          int(kv.get("lease", 0)))
                 for kv in reply.get("kvs", ()))


class EtcdClient:
    """One HTTP client for a list of etcd endpoints (``http://host:port``)."""

    def __init__(self, endpoints: Sequence[str], *,
                 timeout_s: float = ETCD_CALL_TIMEOUT_S) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self.endpoints = list(endpoints)
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(timeout=timeout_s)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        errors = []
        for endpoint in list(self.endpoints):
            reply: dict[str, Any] | None = None
            failure = f"{endpoint}: no answer in {self.timeout_s} s"
            # httpx's timeout bounds each phase; this bounds the whole call.
            with trio.move_on_after(self.timeout_s):
                try:
                    response = await self._http.post(endpoint + path, json=body)
                    reply = response.json()
                except (httpx.HTTPError, ValueError) as error:
                    failure = f"{endpoint}: {type(error).__name__} {error}"
            if reply is None:
                errors.append(failure)
                # The next endpoint first, next time too.
                self.endpoints.remove(endpoint)
                self.endpoints.append(endpoint)
                continue
            if response.status_code != 200 or "error" in reply:
                message = reply.get("message") or reply.get("error") or response.text
                errors.append(f"{endpoint}: HTTP {response.status_code} {message}")
                if response.status_code < 500:
                    break  # the request itself is wrong: another endpoint says the same
                continue
            return reply
        raise EtcdUnavailable(f"etcd {path}: " + "; ".join(errors))

    async def range(self, key: bytes, range_end: bytes | None = None, *,
                    limit: int = 0) -> tuple[KeyValue, ...]:
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        if limit:
            body["limit"] = str(limit)
        return _key_values(await self._call("/v3/kv/range", body))

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        body = put(key, value, lease)["request_put"]
        reply = await self._call("/v3/kv/put", body)
        return int(reply["header"]["revision"])

    async def delete(self, key: bytes, range_end: bytes | None = None) -> None:
        await self._call("/v3/kv/deleterange", delete(key, range_end)["request_delete_range"])

    async def txn(self, compare: Sequence[Compare], success: Sequence[Request],
                  failure: Sequence[Request] = ()) -> TxnResult:
        reply = await self._call("/v3/kv/txn", {"compare": list(compare),
                                                "success": list(success),
                                                "failure": list(failure)})
        ranges = tuple(_key_values(response["response_range"])
                       for response in reply.get("responses", ())
                       if "response_range" in response)
        return TxnResult(bool(reply.get("succeeded", False)),
                         int(reply["header"]["revision"]), ranges)

    async def grant_lease(self, ttl_s: int) -> int:
        reply = await self._call("/v3/lease/grant", {"TTL": str(ttl_s)})
        return int(reply["ID"])

    async def keep_alive(self, lease: int) -> int:
        """Renew ``lease`` once; its remaining TTL (0 or less: it has expired)."""
        reply = await self._call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(reply.get("result", {}).get("TTL", 0))

    async def revoke_lease(self, lease: int) -> None:
        await self._call("/v3/lease/revoke", {"ID": str(lease)})

    async def status(self, endpoint: str) -> dict[str, Any]:
        """One member's status (leader, raft term, database size), for ``vmstore status``."""
        try:
            response = await self._http.post(endpoint + "/v3/maintenance/status", json={})
            reply: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise EtcdUnavailable(f"etcd {endpoint}: {type(error).__name__} {error}") from None
        return reply

    async def health(self, endpoint: str) -> str:
        """"" when the member serves (/health says so: it has a quorum); else why not."""
        try:
            response = await self._http.get(endpoint + "/health")
            reply: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise EtcdUnavailable(f"etcd {endpoint}: {type(error).__name__} {error}") from None
        if str(reply.get("health")) == "true":
            return ""
        return str(reply.get("reason") or f"/health answered {reply}")
