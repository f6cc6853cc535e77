from __future__ import annotations

import io
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest

from asyncphp import caller
from asyncphp.caller import PayloadError, build_payload, php_date_c


def test_date_c_matches_php_format() -> None:
    tz = timezone(timedelta(hours=-3, minutes=-30))
    assert php_date_c(datetime(2026, 11, 27, 14, 1, 18, 999, tzinfo=tz)) == "2026-11-27T14:01:18-03:30"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", php_date_c())


def test_default_payload_is_the_original_timestamp() -> None:
    assert list(build_payload(None, [])) == ["timestamp"]


def test_data_then_pairs_which_win() -> None:
    payload = build_payload('{"a": 1, "b": {"c": [true]}}', ["a=x", "d=e=f"])
    assert payload == {"a": "x", "b": {"c": [True]}, "d": "e=f"}


def test_data_from_stdin() -> None:
    assert build_payload("-", [], stdin=io.StringIO('{"s": "in"}')) == {"s": "in"}


@pytest.mark.parametrize(
    ("data", "pairs", "message"),
    [("[1]", [], "JSON object, not list"), ("{", [], "not valid JSON"), (None, ["novalue"], "key=value")],
)
def test_bad_payloads(data: str | None, pairs: list[str], message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        build_payload(data, pairs)


def test_importing_the_caller_loads_neither_daemon_nor_flup_nor_systemd() -> None:
    code = (
        "import sys, asyncphp.caller; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('flup', 'systemd') "
        "or m in ('asyncphp.loop.daemon', 'asyncphp.loop.engine', 'asyncphp.loop.pool', "
        "'asyncphp.wire.fastcgi')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_nan_is_not_json() -> None:
    with pytest.raises(PayloadError, match="NaN is not JSON"):
        build_payload('{"a": NaN}', [])


def test_durations_and_times_on_the_command_line() -> None:
    import argparse

    from asyncphp.caller import duration, moment

    assert [duration(t) for t in ("30", "30s", "250ms", "5m", "2h", "1d", "1.5s")] == [
        30, 30, 0.25, 300, 7200, 86400, 1.5,
    ]  # fmt: skip
    assert moment("2026-12-01T10:00:00+01:00") == datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert moment("2026-12-01T10:00:00Z").tzinfo is not None
    for bad, parse in (("soon", duration), ("-5s", duration), ("2026-12-01T10:00:00", moment), ("x", moment)):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)


def test_enqueue_refuses_bad_times_before_connecting() -> None:
    from asyncphp.caller import enqueue

    url = "redis://127.0.0.1:1/0"  # never reached: each is refused first
    with pytest.raises(ValueError, match="aware"):
        enqueue({}, redis_url=url, at=datetime(2026, 12, 1))
    with pytest.raises(ValueError, match="not both"):
        enqueue({}, redis_url=url, delay=1, at=datetime.now(UTC))
    with pytest.raises(ValueError, match="delay"):
        enqueue({}, redis_url=url, delay=-1)
    with pytest.raises(ValueError, match="unique_for"):
        enqueue({}, redis_url=url, unique_key="k", unique_for=0)


def test_a_payload_the_daemon_would_skip_is_refused_before_connecting() -> None:
    from asyncphp.caller import enqueue, publish
    from asyncphp.wire.body import Limits

    url = "redis://127.0.0.1:1/0"  # never reached
    with pytest.raises(ValueError, match=r"over max_message_bytes \(10\)"):
        publish({"x": "a" * 20}, redis_url=url, limits=Limits(max_bytes=10))
    with pytest.raises(ValueError, match=r"over max_input_vars \(3\)"):
        enqueue({"x": [1, 2, 3, 4]}, redis_url=url, limits=Limits(max_fields=3))
    with pytest.raises(ValueError, match="over max_input_nesting_level"):
        publish({"a": {"b": {"c": 1}}}, redis_url=url, limits=Limits(max_nesting=1))


def test_the_release_and_trace_context_ride_in_the_payload(monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncphp.caller import _with_meta

    monkeypatch.setenv("ASYNCPHP_RELEASE", "r7")
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert _with_meta({"n": 1}, None, trace, "v=1") == {
        "n": 1, "_asyncphp": {"release": "r7", "traceparent": trace, "tracestate": "v=1"}
    }  # fmt: skip
    assert _with_meta({"n": 1}, "", "", None) == {"n": 1}, "nothing to say: the payload as it was"
    with pytest.raises(ValueError, match="is not a release id"):
        _with_meta({}, "../r1", None, None)
    with pytest.raises(ValueError, match="not W3C trace context"):
        _with_meta({}, "", "garbage", None)
    with pytest.raises(ValueError, match="the daemon's own"):
        _with_meta({"_asyncphp": 1}, "", None, None)


def test_a_partition_key_without_partitions_is_refused_not_ignored(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        caller.main(["--stream", "mail", "--partition-key", "user:42"])
    assert exited.value.code == caller.EXIT_USAGE
    assert "--partition-key chooses one of --partitions N" in capsys.readouterr().err


def test_a_bad_redis_url_is_a_bad_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        caller.main(["--redis-url", "http://:secret@127.0.0.1/"])
    assert exited.value.code == caller.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--redis-url" in err and "secret" not in err


@pytest.mark.parametrize(
    "args",
    [
        ["--release", "../elsewhere"],
        ["--traceparent", "00-nonsense"],
        ["--stream", "m{x}", "--partitions", "2"],
    ],
)
def test_what_cannot_be_published_is_said_as_such_not_as_redis_unreachable(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Old behaviour: every ValueError read "cannot publish to redis://…" and exited 69, as if Redis
    # were down. (Port 1: nothing is asked of Redis before these are refused.)
    assert caller.main(["--redis-url", "redis://127.0.0.1:1/0", *args]) == caller.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("asyncphp-publish: ") and "cannot publish to" not in err and err.count("\n") == 1
