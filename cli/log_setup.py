"""How the daemons and the mount log: level and format, from flags or the config.

``text`` (the default) is one line per record for people and journald:
``2026-11-26 05:01:02,123 WARNING vmstore.dfs.master.chunk_manager[812]: chunk 12: …``.
``json`` is one JSON object per line for log pipelines, with the fields a
record carries (see ``vmstore.dfs.log_fields``) as keys:
``{"time": "2026-11-26T05:01:02.123Z", "level": "warning", "logger": …,
"pid": 812, "message": "chunk 12: …", "event": "replica_damaged", "chunk": 12}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from vmstore.dfs.log_fields import CONTEXT_ATTRIBUTE

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in getattr(record, CONTEXT_ATTRIBUTE, {}).items():
            entry.setdefault(key, value)  # the fixed keys above always win
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    # httpx (the HA master's etcd client) logs every request at INFO: several a
    # second. Its failures reach our own log through EtcdUnavailable.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=LOG_LEVELS,
                        help="default: [logging] level in the config file, else info")
    parser.add_argument("--log-format", choices=LOG_FORMATS,
                        help="text (people, journald) or json (one object per line);"
                        " default: [logging] format in the config file, else text")


def logging_flags(args: argparse.Namespace) -> list[str]:
    """The logging flags given, to pass on to a child process."""
    flags = []
    for flag, value in (("--log-level", args.log_level), ("--log-format", args.log_format)):
        if value:
            flags += [flag, value]
    return flags


def setup_logging_from(args: argparse.Namespace, config_level: str,
                       config_format: str) -> None:
    """Flags first, then the config file's [logging]."""
    setup_logging(args.log_level or config_level, args.log_format or config_format)
