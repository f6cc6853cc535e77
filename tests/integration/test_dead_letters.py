"""`asyncphp dead` on a real Redis: a dead letter of any bytes is listed and replayed with the others,
and concurrent, interrupted or repeated replays run each job once (issue 23, items 3, 13 and 16)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter

import redis

from asyncphp.dev.sandbox import RedisServer
from tests.integration.conftest import wait_for

LETTERS = 2_000


def dead(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "asyncphp", "dead", "--redis-url", url, "--stream", "jobs", *args]


def bury(client: redis.Redis, count: int) -> None:
    """``count`` dead letters of jobs {"n": 0} … as the daemon writes them."""
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        pipe.xadd("jobs:dead", {"id": f"{n + 1}-0", "payload": json.dumps({"n": n}), "attempts": 5,
                                "reason": "the worker failed", "status": 500, "daemon": "here"})  # fmt: skip
    pipe.execute()


def replayed(client: redis.Redis) -> Counter[int]:
    """How often each job's payload is in the stream."""
    return Counter(json.loads(fields[b"payload"])["n"] for _, fields in client.xrange("jobs"))


def test_a_dead_letter_that_is_not_text_is_listed_and_replayed_with_the_others(
    redis_server: RedisServer,
) -> None:
    # Old behaviour: `dead list` and `replay --all` exited 69 ('utf-8' codec can't decode byte 0xff),
    # and no other dead letter could be seen or replayed.
    client = redis.Redis.from_url(redis_server.url)
    client.xadd("jobs:dead", {"id": b"\xff-0", "payload": b'{"n": "\xff\xfe"}', "attempts": b"\xff",
                              "reason": b"bad \xc3", "status": b"\x00", b"\xfekey": b"x"})  # fmt: skip
    bury(client, 1)
    listed = subprocess.run(dead(redis_server.url, "list"), capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "2 dead letter(s) in jobs:dead" in listed.stderr
    assert "entry 1-0  attempts 5  status 500  the worker failed" in listed.stdout
    assert "bad \ufffd" in listed.stdout
    done = subprocess.run(dead(redis_server.url, "replay", "--all"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert client.xlen("jobs") == 2 and client.xlen("jobs:dead") == 0
    payloads = [fields[b"payload"] for _, fields in client.xrange("jobs")]
    assert payloads == [b'{"n": "\xff\xfe"}', b'{"n": 0}'], "in their order"
    client.close()


def test_two_replays_of_every_dead_letter_at_once_run_each_job_once(redis_server: RedisServer) -> None:
    # Old behaviour: XADD, then XDEL, per letter: two `replay --all` of 10,000 at once added all
    # 10,000 twice.
    client = redis.Redis.from_url(redis_server.url)
    bury(client, LETTERS)
    both = [subprocess.Popen(dead(redis_server.url, "replay", "--all"), stdout=subprocess.PIPE, text=True)
            for _ in range(2)]  # fmt: skip
    outputs = [process.communicate(timeout=120)[0] for process in both]
    assert [process.returncode for process in both] == [0, 0]
    assert replayed(client) == Counter(range(LETTERS)), "each job in the stream exactly once"
    assert sum(len(out.splitlines()) for out in outputs) == LETTERS, (
        "each letter said by the one that moved it"
    )
    assert client.xlen("jobs:dead") == 0
    client.close()


def test_a_replay_killed_half_way_and_run_again_runs_each_job_once(redis_server: RedisServer) -> None:
    # Old behaviour: a replay killed between its XADD and its XDEL left the letter behind, and the
    # next replay added its job a second time.
    client = redis.Redis.from_url(redis_server.url)
    bury(client, LETTERS)
    first = subprocess.Popen(dead(redis_server.url, "replay", "--all"), stdout=subprocess.DEVNULL)
    wait_for(lambda: client.xlen("jobs") >= LETTERS // 10, what="the first replay under way")
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    left = client.xlen("jobs:dead")
    assert 0 < left < LETTERS, "killed half-way"
    again = subprocess.run(dead(redis_server.url, "replay", "--all"), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert len(again.stdout.splitlines()) == left
    assert replayed(client) == Counter(range(LETTERS))
    assert client.xlen("jobs:dead") == 0
    client.close()


def test_purge_of_every_dead_letter_removes_those_there_and_says_how_many(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    bury(client, 250)  # more than a page
    done = subprocess.run(dead(redis_server.url, "purge", "--all"), capture_output=True, text=True)
    assert done.returncode == 0 and "purged 250 dead letter(s)" in done.stderr, done.stderr
    assert client.xlen("jobs:dead") == 0
    client.close()
