"""Test-wide fixtures: unexpected warnings fail the test.

Any log record at WARNING or above that reaches the root logger while a test
runs (its setup, call and teardown, fixtures included) fails that test, unless
the test declared it expected::

    def test_peer_down(expected_logs):
        expected_logs.allow("vmstore.dfs.client", r"replica .* unreachable")
        ...

In the spirit of S3QL's ``tests/pytest_checklogs.py``: a warning nobody
expected is either a bug or a test that does not say what it exercises.

Caveats: records from loggers with ``propagate = False``, or dropped by a
logger level above WARNING, never reach the root logger and are not seen;
neither are logs of child processes (system tests read those themselves).
The failure is raised in the fixture's teardown, so pytest reports it as an
error of the test ("1 passed, 1 error"), which fails the run all the same.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

pytest_plugins = ["pytester"]

CHECKED_LEVEL = logging.WARNING


@dataclass
class _Allowance:
    logger_prefix: str | None
    pattern: re.Pattern[str]
    level: int
    count: int | None
    matched: int = 0

    def matches(self, record: logging.LogRecord, message: str) -> bool:
        if record.levelno != self.level:
            return False
        if self.logger_prefix is not None:
            name = record.name
            if name != self.logger_prefix and not name.startswith(self.logger_prefix + "."):
                return False
        return self.pattern.search(message) is not None

    def describe(self) -> str:
        logger = self.logger_prefix if self.logger_prefix is not None else "any logger"
        return f"{logging.getLevelName(self.level)} {self.pattern.pattern!r} from {logger}"


class LogChecker(logging.Handler):
    """Collects WARNING+ records; reports those no allowance matches.

    Installed on the root logger for one test by the autouse fixture below;
    tests reach it as the ``expected_logs`` fixture.
    """

    def __init__(self) -> None:
        super().__init__(level=CHECKED_LEVEL)
        self.records: list[logging.LogRecord] = []
        self._messages: list[str] = []
        self._allowances: list[_Allowance] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < CHECKED_LEVEL:  # handle() called directly skips the level check
            return
        # Format now: the args may change before the test ends.
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):  # what %-formatting raises
            message = f"{record.msg!r} % {record.args!r} (unformattable)"
        self.records.append(record)
        self._messages.append(message)

    def allow(
        self,
        logger: str | None,
        message_regex: str,
        level: int = logging.WARNING,
        count: int | None = None,
    ) -> None:
        """Mark records as expected.

        *logger* is a logger name that matches itself and its children
        (``"vmstore.dfs"`` matches ``"vmstore.dfs.client"``), or None for
        any logger. *message_regex* is searched (``re.search``) in the
        formatted message. Only records of exactly *level* match, so allowing
        a WARNING does not hide an ERROR. With *count*, the test also fails
        unless exactly that many records matched.
        """
        assert level >= CHECKED_LEVEL, "records below WARNING are never checked"
        assert count is None or count >= 0
        self._allowances.append(_Allowance(logger, re.compile(message_regex), level, count))

    def problems(self) -> list[str]:
        """Unexpected records and unmet counts, one line each."""
        for allowance in self._allowances:
            allowance.matched = 0
        lines = []
        for record, message in zip(self.records, self._messages, strict=True):
            allowance = next((a for a in self._allowances if a.matches(record, message)), None)
            if allowance is None:
                lines.append(
                    f"unexpected {record.levelname} from {record.name} "
                    f"({record.pathname}:{record.lineno}): {message}"
                )
            else:
                allowance.matched += 1
        for allowance in self._allowances:
            if allowance.count is not None and allowance.matched != allowance.count:
                lines.append(
                    f"expected {allowance.count} x {allowance.describe()}, got {allowance.matched}"
                )
        return lines


# Autouse fixtures are set up before the fixtures a test names and torn down
# after them, so records logged by other fixtures are checked too.
@pytest.fixture(autouse=True)
def _check_logs() -> Iterator[LogChecker]:
    checker = LogChecker()
    root = logging.getLogger()
    root.addHandler(checker)
    try:
        yield checker
    finally:
        root.removeHandler(checker)
    problems = checker.problems()
    if problems:
        pytest.fail(
            "log records at WARNING or above that the test did not expect "
            "(declare them with the expected_logs fixture):\n  " + "\n  ".join(problems),
            pytrace=False,
        )


@pytest.fixture
def expected_logs(_check_logs: LogChecker) -> LogChecker:
    """The current test's log checker; call ``.allow(...)`` on it."""
    return _check_logs


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "system: real daemons as separate processes")
