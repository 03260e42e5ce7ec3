"""The log checker of tests/conftest.py: unexpected WARNING+ records fail a test."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"


def _record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.makeLogRecord(
        {
            "name": name,
            "levelno": level,
            "levelname": logging.getLevelName(level),
            "msg": msg,
            "args": args,
        }
    )


@pytest.fixture
def checker(expected_logs: logging.Handler) -> logging.Handler:
    # A fresh checker of the same class, not installed anywhere: these tests
    # feed it records by hand and must not trip the real one.
    return type(expected_logs)()


def test_unexpected_warning_is_reported(checker) -> None:
    checker.handle(_record("vmstore.dfs.client", logging.WARNING, "replica %d down", 3))
    problems = checker.problems()
    assert len(problems) == 1
    assert "unexpected WARNING from vmstore.dfs.client" in problems[0]
    assert problems[0].endswith("replica 3 down")


def test_below_warning_is_ignored(checker) -> None:
    checker.handle(_record("vmstore", logging.INFO, "hello"))
    checker.handle(_record("vmstore", logging.DEBUG, "hello"))
    assert checker.problems() == []


def test_allow_matches_logger_prefix_and_regex(checker) -> None:
    checker.allow("vmstore.dfs", r"replica \d+ down")
    checker.handle(_record("vmstore.dfs", logging.WARNING, "replica 1 down"))
    checker.handle(_record("vmstore.dfs.client", logging.WARNING, "replica %d down", 2))
    checker.handle(_record("vmstore.dfsx", logging.WARNING, "replica 3 down"))
    checker.handle(_record("vmstore.dfs.client", logging.WARNING, "something else"))
    problems = checker.problems()
    assert len(problems) == 2
    assert "vmstore.dfsx" in problems[0]
    assert "something else" in problems[1]


def test_allow_any_logger(checker) -> None:
    checker.allow(None, "^disk full$")
    checker.handle(_record("anything.at.all", logging.WARNING, "disk full"))
    assert checker.problems() == []


def test_allowing_a_warning_does_not_hide_an_error(checker) -> None:
    checker.allow(None, "boom")
    checker.handle(_record("x", logging.ERROR, "boom"))
    assert len(checker.problems()) == 1
    checker.allow(None, "boom", level=logging.ERROR)
    assert checker.problems() == []


def test_count_must_match_exactly(checker) -> None:
    checker.allow("x", "boom", count=2)
    checker.handle(_record("x", logging.WARNING, "boom"))
    assert checker.problems() == ["expected 2 x WARNING 'boom' from x, got 1"]
    checker.handle(_record("x", logging.WARNING, "boom"))
    assert checker.problems() == []


def test_unformattable_message_is_still_reported(checker) -> None:
    checker.handle(_record("x", logging.WARNING, "%d items", "not a number"))
    assert "unformattable" in checker.problems()[0]


def test_fixture_in_a_real_session(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makepyfile(
        r"""
        import logging
        import pytest

        log = logging.getLogger("vmstore.dfs.client")

        def test_info_passes():
            log.info("fine")

        def test_warning_fails():
            log.warning("replica %d down", 7)

        def test_allowed_warning_passes(expected_logs):
            expected_logs.allow("vmstore.dfs", r"replica \d+ down")
            log.warning("replica %d down", 7)

        def test_error_not_covered_by_warning_allowance(expected_logs):
            expected_logs.allow("vmstore.dfs", "quorum")
            log.error("quorum lost")

        def test_count_not_met(expected_logs):
            expected_logs.allow(None, "retry", count=2)
            log.warning("retry")

        def test_caplog_still_sees_records(caplog, expected_logs):
            expected_logs.allow("vmstore", "slow")
            with caplog.at_level(logging.INFO):
                log.info("started")
                log.warning("slow peer")
            assert [r.getMessage() for r in caplog.records] == ["started", "slow peer"]

        @pytest.fixture
        def noisy():
            yield
            logging.getLogger("other").error("teardown trouble")

        def test_fixture_teardown_is_checked(noisy):
            pass

        def test_records_from_threads_are_checked():
            import threading
            t = threading.Thread(target=lambda: log.warning("from a thread"))
            t.start()
            t.join()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=8, errors=5)
    result.stdout.fnmatch_lines_random(
        [
            "*ERROR at teardown of test_warning_fails*",
            "*unexpected WARNING from vmstore.dfs.client (*): replica 7 down",
            "*unexpected ERROR from vmstore.dfs.client (*): quorum lost",
            "*expected 2 x WARNING 'retry' from any logger, got 1",
            "*unexpected ERROR from other (*): teardown trouble",
            "*unexpected WARNING from vmstore.dfs.client (*): from a thread",
        ]
    )
    # The handler is removed after each test: nothing leaks into the next one.
    assert "ERROR at teardown of test_info_passes" not in result.stdout.str()
    assert "ERROR at teardown of test_allowed_warning_passes" not in result.stdout.str()
