"""The few etcd v3 calls metadata HA needs, over etcd's JSON gateway, under trio.

Why this client: etcd's own Python clients speak gRPC and run on asyncio or
threads, not trio; the JSON gateway (``/v3/kv/*``, ``/v3/lease/*``,
``/v3/watch``) is part of every etcd 3.4 server (Debian's ``etcd-server``) and
needs only an HTTP client. ``httpx.AsyncClient`` is a well-kept one that runs
under trio (through anyio), with per-request deadlines, streamed responses
and connections kept alive between calls.

Promises:
* Every call has a deadline (``ETCD_CALL_TIMEOUT_S``) and names the endpoint
  and the call when it fails: ``EtcdUnavailable``, which the caller may retry.
* A call that fails on one endpoint is tried once on each other endpoint
  before it is reported; the endpoint that answered is tried first next time.
* A failed request may still have taken effect in etcd (the reply was lost):
  callers make their writes idempotent or check (``MetadataJournal`` does).
* Keys and values are bytes here; base64 and int64-as-string are the
  gateway's encoding and stay inside this module.
* A ``Watcher`` returns every change to its keys after its start revision, in
  revision order, each once. A stream that breaks, or stays silent for
  ETCD_WATCH_SILENCE_S, is opened again (next endpoint first) from the
  revision after the last event seen, so a dead or cut-off member costs at
  most that long; ``WatchCompacted`` when etcd no longer holds that revision
  (the caller reads instead); ``EtcdUnavailable`` when no endpoint opens one.

* ``BlockingTxn`` is the one call made from a worker thread: the commit
  thread's journal append, a guarded txn. It keeps its promises with the
  standard library's ``http.client`` (one kept-alive connection per endpoint):
  asking trio for it cost two thread hops per batch, each waiting for the
  trio thread to let go of the GIL (up to the 5 ms switch interval on a busy
  master), and httpx ~0.6 ms of CPU per request against http.client's 0.2.

Caveat: the gateway's watch is one HTTP request per stream, answered with
newline-separated JSON messages; etcd 3.4 sends no heartbeat on it (progress
notifications come every ten minutes), so silence is not an error here: a
silent stream is simply opened again, which costs one request.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from vmstore.dfs.constants import (
    ETCD_CALL_TIMEOUT_S,
    ETCD_WATCH_MESSAGE_BYTES_MAX,
    ETCD_WATCH_SILENCE_S,
)
from vmstore.dfs.errors import EtcdUnavailable

# Asks etcd to end a watch stream whose member lost its raft leader (gRPC
# metadata "hasleader", which the gateway takes from this header): a member cut
# off from the quorum would otherwise keep the stream open and silent.
REQUIRE_LEADER = {"Grpc-Metadata-hasleader": "true"}


class WatchCompacted(Exception):
    """etcd no longer holds the revision a watch would start from (compacted): read the
    keys instead. Never leaves dfs.master (the journal's follower reads), so it is no
    DfsError: it has no wire code and no errno."""


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


@dataclass(frozen=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]
    revision: int  # the store's revision the range was read at
    more: bool  # a limit left keys out


@dataclass(frozen=True)
class WatchEvent:
    deleted: bool
    kv: KeyValue  # a delete's: the key and mod_revision (the deletion's) only


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


def _txn_body(compare: Sequence[Compare], success: Sequence[Request],
              failure: Sequence[Request]) -> dict[str, Any]:
    return {"compare": list(compare), "success": list(success), "failure": list(failure)}


def _txn_result(reply: dict[str, Any]) -> TxnResult:
    ranges = tuple(_key_values(response["response_range"])
                   for response in reply.get("responses", ())
                   if "response_range" in response)
    return TxnResult(bool(reply.get("succeeded", False)), int(reply["header"]["revision"]),
                     ranges)


class _Endpoints:
    """etcd endpoints (``http://host:port``) in the order to try them, and the deadline
    of one call on one of them."""

    def __init__(self, endpoints: Sequence[str], *,
                 timeout_s: float = ETCD_CALL_TIMEOUT_S) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self.endpoints = list(endpoints)
        self.timeout_s = timeout_s

    def _passed_over(self, endpoint: str) -> None:
        """``endpoint`` failed: the others are tried first, next time too."""
        if endpoint in self.endpoints:
            self.endpoints.remove(endpoint)
            self.endpoints.append(endpoint)


class EtcdClient(_Endpoints):
    """One HTTP client for a list of etcd endpoints, under trio."""

    def __init__(self, endpoints: Sequence[str], *,
                 timeout_s: float = ETCD_CALL_TIMEOUT_S) -> None:
        super().__init__(endpoints, timeout_s=timeout_s)
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
                self._passed_over(endpoint)
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
        return (await self.range_at(key, range_end, limit=limit)).kvs

    async def range_at(self, key: bytes, range_end: bytes | None = None, *,
                       limit: int = 0) -> RangeResult:
        """``range``, with the revision it was read at (a watch goes on from the next)."""
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        if limit:
            body["limit"] = str(limit)
        reply = await self._call("/v3/kv/range", body)
        return RangeResult(_key_values(reply), int(reply["header"]["revision"]),
                           bool(reply.get("more", False)))

    def watch(self, key: bytes, range_end: bytes | None, start_revision: int, *,
              silence_s: float = ETCD_WATCH_SILENCE_S) -> Watcher:
        """Changes to ``key`` (to ``range_end``) from ``start_revision`` on; see Watcher."""
        return Watcher(self, key, range_end, start_revision, silence_s)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        body = put(key, value, lease)["request_put"]
        reply = await self._call("/v3/kv/put", body)
        return int(reply["header"]["revision"])

    async def delete(self, key: bytes, range_end: bytes | None = None) -> None:
        await self._call("/v3/kv/deleterange", delete(key, range_end)["request_delete_range"])

    async def txn(self, compare: Sequence[Compare], success: Sequence[Request],
                  failure: Sequence[Request] = ()) -> TxnResult:
        return _txn_result(await self._call("/v3/kv/txn", _txn_body(compare, success, failure)))

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


class BlockingTxn(_Endpoints):
    """``txn`` for a worker thread, within about ``timeout_s`` per endpoint tried.

    Its connections belong to the calls that use them, one call at a time (the
    committer runs one batch at a time); ``close`` when no call can come any more.
    """

    def __init__(self, endpoints: Sequence[str], *,
                 timeout_s: float = ETCD_CALL_TIMEOUT_S) -> None:
        super().__init__(endpoints, timeout_s=timeout_s)
        self._connections: dict[str, http.client.HTTPConnection] = {}

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def txn(self, compare: Sequence[Compare], success: Sequence[Request],
            failure: Sequence[Request] = (), *,
            stop: threading.Event | None = None) -> TxnResult:
        """``EtcdClient.txn``; once ``stop`` is set, no further endpoint is tried."""
        body = json.dumps(_txn_body(compare, success, failure)).encode()
        errors: list[str] = []
        for endpoint in list(self.endpoints):
            if stop is not None and stop.is_set() and errors:
                errors.append("the caller stopped asking")
                break
            try:
                status, reply = self._post(endpoint, "/v3/kv/txn", body)
            except (OSError, http.client.HTTPException, ValueError) as error:
                dropped = self._connections.pop(endpoint, None)
                if dropped is not None:
                    dropped.close()
                errors.append(f"{endpoint}: {type(error).__name__} {error}")
                self._passed_over(endpoint)
                continue
            if status != 200 or "error" in reply:
                errors.append(f"{endpoint}: HTTP {status} {reply.get('message') or reply}")
                if status < 500:
                    break  # the request itself is wrong: another endpoint says the same
                continue
            return _txn_result(reply)
        raise EtcdUnavailable("etcd /v3/kv/txn: " + "; ".join(errors))

    def _post(self, endpoint: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        deadline_s = time.monotonic() + self.timeout_s
        connection = self._connections.get(endpoint)
        if connection is not None:
            try:
                return self._exchange(connection, path, body, deadline_s)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A kept-alive connection the other side had closed: a new one, once.
                self._connections.pop(endpoint).close()
        url = urlsplit(endpoint)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(f"not an http://host:port endpoint: {endpoint}")
        connection = http.client.HTTPConnection(url.hostname, url.port or 2379,
                                                timeout=self.timeout_s)
        self._connections[endpoint] = connection
        return self._exchange(connection, path, body, deadline_s)

    def _exchange(self, connection: http.client.HTTPConnection, path: str, body: bytes,
                  deadline_s: float) -> tuple[int, dict[str, Any]]:
        # Each socket wait gets what is left of the call's time (a new connection's
        # connect: all of it), so a silent member costs about timeout_s, never more.
        if connection.sock is not None:
            connection.sock.settimeout(max(deadline_s - time.monotonic(), 0.001))
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        if connection.sock is not None:
            connection.sock.settimeout(max(deadline_s - time.monotonic(), 0.001))
        response = connection.getresponse()
        reply = json.loads(response.read())
        if not isinstance(reply, dict):
            raise ValueError(f"not a JSON object: {str(reply)[:200]}")
        return response.status, reply


class Watcher:
    """``async with client.watch(...) as watcher: events = await watcher.next()``.

    One stream at a time, on the first endpoint that opens one; ``next_revision``
    is where a new stream starts: the revision after the last event returned.
    """

    def __init__(self, client: EtcdClient, key: bytes, range_end: bytes | None,
                 start_revision: int, silence_s: float) -> None:
        assert start_revision > 0, start_revision
        self.client = client
        self.key = key
        self.range_end = range_end
        self.next_revision = start_revision
        self.silence_s = silence_s
        self.streams = 0  # opened so far: the first, then one per reconnection
        self._endpoint = ""
        self._stack: AsyncExitStack | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._buffer = b""

    async def __aenter__(self) -> Watcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._drop()

    async def next(self) -> list[WatchEvent]:
        """The next change(s), at least one event; waits for them (cancel to stop).

        Raises WatchCompacted (etcd compacted ``next_revision`` away: read the
        keys instead), EtcdUnavailable (no endpoint opened a stream in time, or
        streams keep breaking without an event).
        """
        broken = 0  # streams in a row that broke before an event
        while True:
            if self._chunks is None:
                await self._open()
            try:
                message = await self._message()
                events = [] if message is None else self._events(message)
            except EtcdUnavailable:  # an error message, a cancelled watch, no JSON
                message = None
                broken += 1
                self.client._passed_over(self._endpoint)
                if broken > len(self.client.endpoints):
                    await self._drop()
                    raise
            if message is None:  # silent, or it ended: another stream from where it was
                await self._drop()
                continue
            if events:
                self.next_revision = events[-1].kv.mod_revision + 1
                return events

    async def _open(self) -> None:
        request: dict[str, Any] = {"key": _b64(self.key),
                                   "start_revision": str(self.next_revision)}
        if self.range_end is not None:
            request["range_end"] = _b64(self.range_end)
        errors = []
        for endpoint in list(self.client.endpoints):
            stack = AsyncExitStack()
            self._stack, self._endpoint = stack, endpoint
            try:
                with trio.fail_after(self.client.timeout_s):
                    response = await stack.enter_async_context(self.client._http.stream(
                        "POST", endpoint + "/v3/watch", json={"create_request": request},
                        headers=REQUIRE_LEADER,
                        # Reads wait as long as the silence deadline lets them.
                        timeout=httpx.Timeout(self.client.timeout_s, read=None)))
                    if response.status_code != 200:
                        raise EtcdUnavailable(f"HTTP {response.status_code}")
                    self._chunks, self._buffer = response.aiter_raw(), b""
                    # etcd answers "created" at once: this member serves.
                    created = await self._message()
                if created is None or not created.get("created"):
                    raise EtcdUnavailable(f"the watch was not created: {created}")
                self.streams += 1
                self._events(created)  # a compaction may already say so
                return
            except (httpx.HTTPError, EtcdUnavailable, trio.TooSlowError) as error:
                await self._drop()
                errors.append(f"{endpoint}: {type(error).__name__} {error}")
                self.client._passed_over(endpoint)
        raise EtcdUnavailable(f"etcd /v3/watch {self.key!r}: " + "; ".join(errors))

    async def _message(self) -> dict[str, Any] | None:
        """The stream's next message (its result); None: the stream ended, broke, or
        was silent for ``silence_s``. EtcdUnavailable: it sent something else."""
        assert self._chunks is not None
        while b"\n" not in self._buffer:
            if len(self._buffer) > ETCD_WATCH_MESSAGE_BYTES_MAX:
                raise EtcdUnavailable(f"etcd watch {self.key!r}: a message over"
                                      f" {ETCD_WATCH_MESSAGE_BYTES_MAX} bytes")
            chunk = None
            with trio.move_on_after(self.silence_s):
                try:
                    chunk = await self._chunks.__anext__()
                except (StopAsyncIteration, httpx.HTTPError):
                    pass
            if chunk is None:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError as error:
            raise EtcdUnavailable(f"etcd watch {self.key!r}: not JSON ({error})") from None
        if not isinstance(message, dict) or "result" not in message:
            # {"error": ...}: this member cannot serve the watch (it lost its leader).
            raise EtcdUnavailable(f"etcd watch {self.key!r}: {line[:200]!r}")
        result: dict[str, Any] = message["result"]
        return result

    def _events(self, result: dict[str, Any]) -> list[WatchEvent]:
        compacted = int(result.get("compact_revision", 0))
        if compacted:
            raise WatchCompacted(f"etcd watch {self.key!r}: revision {self.next_revision}"
                                 f" is compacted (etcd keeps {compacted} on)")
        if result.get("canceled"):
            raise EtcdUnavailable(f"etcd watch {self.key!r} cancelled:"
                                  f" {result.get('cancel_reason') or 'no reason given'}")
        events = result.get("events", ())
        kvs = _key_values({"kvs": [event["kv"] for event in events]})
        return [WatchEvent(event.get("type") == "DELETE", kv)
                for event, kv in zip(events, kvs, strict=True)]

    async def _drop(self) -> None:
        stack = self._stack
        self._stack, self._chunks, self._buffer = None, None, b""
        if stack is not None:
            with trio.CancelScope(shield=True, deadline=trio.current_time()
                                  + self.client.timeout_s):
                try:
                    await stack.aclose()
                except httpx.HTTPError:
                    pass  # broken already: nothing to close cleanly
