"""Redis Cluster's decisions, without a cluster: the URL taken apart, hash tags and slots (against
Redis's own rule), the keys a stream brings sharing its slot, the caller's partitions, what the
settings refuse on a cluster, the streams split by slot with their lanes, the reconnect backoff's
cap, and the replies by which a node says the key is served elsewhere."""

from __future__ import annotations

import binascii
import concurrent.futures
import contextlib
import logging
import math
import random
import re
import zlib
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.connection import SSLConnection, parse_url

from asyncphp import settings as settings_mod
from asyncphp.caller import partition
from asyncphp.core.link import BACKOFF_CAP, BACKOFF_FIRST, CLUSTER_BACKOFF_CAP, LinkState
from asyncphp.core.reading import Lane, Lanes, Priority, Rate
from asyncphp.loop.factory import _by_slot
from asyncphp.loop.keeper import Keeper, Source
from asyncphp.loop.poller import Poller
from asyncphp.loop.redislink import ignore
from asyncphp.redisurl import ClusterURL, cluster, hash_tag, is_cluster, redact, slot, validate
from asyncphp.settings import Settings, SettingsError
from asyncphp.wire.keys import Keys
from asyncphp.wire.replies import ReplyError, SlotRange, cluster_slots

SEED = "redis+cluster://127.0.0.1:7000/"
SLOTS = 16384


def load(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    # A real /etc/asyncphp/daemon.toml on this machine must not leak into these tests.
    return settings_mod.load(argv, env or {}, default_config=Path("/nonexistent/daemon.toml"))


def on_cluster(*argv: str) -> Settings:
    return load(["--redis-url", SEED, *argv])


def redis_slot(key: str) -> int:
    """Redis's rule, written out: CRC16-XMODEM of the text between the first ``{`` and the first
    ``}`` after it when that is not empty, else of the whole key, modulo 16384."""
    data = key.encode()
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % SLOTS


def connects_with(url: str) -> dict[str, Any]:
    """What redis-py connects to for ``url`` (host, port, db, credentials, connection class…)."""
    options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    return options


# The URL.


def test_a_cluster_url_names_its_seeds_credentials_and_pubsub_mode() -> None:
    parsed = cluster("redis+cluster://app:s3cret@10.0.0.1:7000,[::1]:7001,node-c:7002/")
    assert parsed == ClusterURL(
        seeds=(("10.0.0.1", 7000), ("::1", 7001), ("node-c", 7002)),
        scheme="redis",
        userinfo="app:s3cret@",
        query=(),
        pubsub="sharded",
    )
    assert cluster("rediss+cluster://h:7000/0?pubsub=classic").scheme == "rediss"
    assert cluster("rediss+cluster://h:7000/0?pubsub=classic").pubsub == "classic"
    assert cluster("redis+cluster://h:7000").seeds == (("h", 7000),), "no path at all: database 0"


def test_each_node_gets_the_credentials_the_scheme_database_0_and_the_other_options() -> None:
    url = "rediss+cluster://app:p%40ss@[::1]:7000,node-b:7001/?pubsub=classic&socket_timeout=3"
    parsed = cluster(url)
    for host, port in parsed.seeds:
        node = parsed.node_url(host, port)
        assert urlsplit(node).scheme == "rediss"
        assert dict(parse_qsl(urlsplit(node).query)) == {"socket_timeout": "3"}, "pubsub is not redis-py's"
        options = connects_with(node)
        assert (options["host"], options["port"], options["db"]) == (host, port, 0)
        assert (options["username"], options["password"]) == ("app", "p@ss")
        assert options["connection_class"] is SSLConnection
        assert options["socket_timeout"] == 3.0
    assert parsed.node_url("::1", 7000).startswith("rediss://app:p%40ss@[::1]:7000/0"), "IPv6 bracketed"
    plain = cluster("redis+cluster://h:7000/").node_url("10.1.2.3", 7005)
    assert plain == "redis://10.1.2.3:7005/0"


@settings(max_examples=100, deadline=None)
@given(
    seeds=st.lists(
        st.tuples(
            st.one_of(
                st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True),
                st.ip_addresses(v=4).map(str),
                st.ip_addresses(v=6).map(str),
            ),
            st.integers(1, 65535),
        ),
        min_size=1,
        max_size=4,
    ),
    tls=st.booleans(),
)
def test_any_list_of_seeds_comes_back_as_written_and_each_node_url_reaches_it(
    seeds: list[tuple[str, int]], tls: bool
) -> None:
    """Hosts (names, IPv4, IPv6 in brackets) and ports survive the round trip through the URL."""
    hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in seeds)
    url = f"{'rediss' if tls else 'redis'}+cluster://u:pw@{hosts}/"
    validate(url)
    parsed = cluster(url)
    assert parsed.seeds == tuple(seeds)
    for host, port in seeds:
        options = connects_with(parsed.node_url(host, port))
        assert (options["host"], options["port"], options["password"]) == (host, port, "pw")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://h:7000/3", "database 0 only"),
        ("redis+cluster://h:7000/0/1", "database 0 only"),
        ("redis+cluster://h:7000/?pubsub=broadcast", "sharded or classic, not 'broadcast'"),
        ("redis+cluster://h:7000/?pubsub=", "sharded or classic"),
        ("redis+cluster://h/", "'h' is not host:port"),
        ("redis+cluster://h:port/", "'h:port' is not host:port"),
        ("redis+cluster://:7000/", "':7000' is not host:port"),
        ("redis+cluster://h:7000,/", "'' is not host:port"),
        ("redis+cluster://[::1]/", "'[::1]' is not host:port"),
        ("redis+cluster:///", "is not host:port"),
    ],
)
def test_a_bad_cluster_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        cluster(url)
    with pytest.raises(ValueError, match=re.escape(message)):
        validate(url)


def test_the_refusal_of_a_cluster_url_never_shows_its_password() -> None:
    for url in ("redis+cluster://u:secret@h:x/", "redis+cluster://u:secret@h:7000/5"):
        with pytest.raises(ValueError) as raised:
            cluster(url)
        assert "secret" not in str(raised.value)
    with pytest.raises(ValueError, match="not a cluster URL") as raised:
        cluster("redis://u:secret@h:7000/0")
    assert "secret" not in str(raised.value) and "***" in str(raised.value)


def test_validate_accepts_cluster_urls_and_checks_redis_pys_options_for_the_nodes() -> None:
    validate(SEED)
    validate("rediss+cluster://u:p@a:7000,[::1]:7001/0?pubsub=classic&ssl_cert_reqs=none")
    with pytest.raises(ValueError, match="socket_timeout"):
        validate("redis+cluster://h:7000/?socket_timeout=soon")


@pytest.mark.parametrize("url", ["redis+cluster://a:99999/", "redis+cluster://a:7000,b:99999/"])
def test_validate_refuses_a_port_out_of_range_in_any_seed(url: str) -> None:
    """Every seed's port, not only the first one's (which redis-py's parser checks too)."""
    with pytest.raises(ValueError):
        validate(url)


def test_is_cluster_by_scheme_alone() -> None:
    assert is_cluster(SEED) and is_cluster("rediss+cluster://h:7000/")
    for url in ("redis://h:7000/0", "rediss://h/0", "unix:///run/redis.sock", "redis+sentinel://s:26379/m"):
        assert not is_cluster(url)
    assert not is_cluster("http://x/redis+cluster://h:7000/")


def test_redact_hides_the_password_of_a_cluster_url_and_keeps_the_rest() -> None:
    url = "rediss+cluster://app:s3cret@[::1]:7000,node-b:7001/?pubsub=classic"
    assert redact(url) == "rediss+cluster://app:***@[::1]:7000,node-b:7001/?pubsub=classic"
    assert redact(SEED) == SEED


def test_a_cluster_url_refused_by_the_settings_does_not_show_its_password() -> None:
    """The refused URL is shown redacted: the error reaches the log."""
    with pytest.raises(SettingsError) as raised:
        load(["--redis-url", "redis+cluster://app:s3cret@h:x/"])
    assert "invalid setting redis_url" in str(raised.value)
    assert "s3cret" not in str(raised.value)


# Hash tags and slots.


@pytest.mark.parametrize(
    ("key", "tag"),
    [
        ("{orders}", "orders"),
        ("orders{0}", "0"),
        ("a{b}c{d}", "b"),
        ("{}", ""),
        ("{}{a}", ""),  # the first { is closed empty: Redis hashes the whole key
        ("orders", ""),
        ("{orders", ""),
        ("orders}{x}", "x"),
        ("{{a}}", "{a"),
        ("x{", ""),
    ],
)
def test_hash_tag_is_what_redis_hashes(key: str, tag: str) -> None:
    assert hash_tag(key) == tag


def test_slots_of_known_keys() -> None:
    """CLUSTER KEYSLOT's own examples."""
    assert slot("somekey") == 11058
    assert slot("foo{hash_tag}") == 2515
    assert slot("{user1000}.following") == slot("{user1000}.followers")


# Names are UTF-8 text (TOML, flags, the PHP client): no lone surrogates, which have no UTF-8.
NAME_CHARS = st.characters(blacklist_categories=("Cs",))


@settings(max_examples=100, deadline=None)
@given(key=st.text(alphabet=st.sampled_from("{}ab:é"), max_size=12) | st.text(NAME_CHARS, max_size=20))
def test_slot_and_hash_tag_follow_redis_rule(key: str) -> None:
    """The slot is Redis's; a key with a tag hashes as its tag; a key without one, whole."""
    assert slot(key) == redis_slot(key)
    tag = hash_tag(key)
    assert slot(key) == binascii.crc_hqx((tag or key).encode(), 0) % SLOTS
    if tag:
        assert f"{{{tag}}}" in key


TAGGED = st.builds(
    lambda prefix, tag, rest: f"{prefix}{{{tag}}}{rest}",
    st.text(alphabet=st.characters(blacklist_characters="{", blacklist_categories=("Cs",)), max_size=8),
    st.text(
        alphabet=st.characters(blacklist_characters="}", blacklist_categories=("Cs",)), min_size=1, max_size=8
    ),
    st.text(NAME_CHARS, max_size=8),
)


@settings(max_examples=100, deadline=None)
@given(stream=TAGGED, unique_key=st.text(NAME_CHARS, max_size=10))
def test_every_key_of_a_tagged_stream_shares_its_slot(stream: str, unique_key: str) -> None:
    """Scripts and MULTIs over a stream and its keys run on one shard."""
    keys = Keys(stream)
    derived = [
        *keys.moving(),
        keys.delayed,
        keys.jobs,
        keys.unique_of,
        keys.seq,
        keys.rate,
        keys.guard(unique_key),
        keys.dead,
        keys.groups,
    ]
    assert {slot(key) for key in derived} == {slot(stream)}


def test_an_untagged_stream_does_not_share_its_slot_with_its_keys() -> None:
    """Why the settings refuse one on a cluster."""
    assert slot("orders") != slot(Keys("orders").dead)
    assert slot("orders") != slot(Keys("orders").delayed)
    assert slot("{orders}") == slot(Keys("{orders}").dead)


# The caller's partitions.


def test_partition_by_key_is_phps_crc32_modulo_the_count() -> None:
    # 0xCBF43926 is CRC-32's check value for "123456789" (and what PHP's crc32() returns).
    assert partition("jobs", 10, "123456789") == f"jobs{{{0xCBF43926 % 10}}}"
    assert partition("jobs", 7, "123456789") == f"jobs{{{0xCBF43926 % 7}}}"
    assert partition("jobs", 1, "anything") == "jobs{0}"


@settings(max_examples=100, deadline=None)
@given(key=st.text(NAME_CHARS, max_size=30), partitions=st.integers(1, 1000))
def test_a_key_always_goes_to_the_same_partition_in_range(key: str, partitions: int) -> None:
    name = partition("commands", partitions, key)
    index = zlib.crc32(key.encode()) % partitions
    assert name == f"commands{{{index}}}" == partition("commands", partitions, key)
    assert hash_tag(name) == str(index) and 0 <= index < partitions


def test_without_a_key_partitions_are_drawn_over_all_of_them() -> None:
    state = random.getstate()
    try:
        random.seed(15)
        drawn = [partition("commands", 7) for _ in range(2000)]
    finally:
        random.setstate(state)
    assert set(drawn) == {f"commands{{{i}}}" for i in range(7)}


def test_partitions_below_one_are_refused() -> None:
    for partitions in (0, -1):
        with pytest.raises(ValueError, match="1 or more"):
            partition("commands", partitions, "k")
        with pytest.raises(ValueError):
            partition("commands", partitions)


def test_a_name_with_a_hash_tag_of_its_own_is_refused_its_partitions_would_share_a_slot() -> None:
    with pytest.raises(ValueError, match="hash tag"):
        partition("{jobs}", 4, "k")


def test_partitions_are_streams_a_cluster_accepts_on_slots_of_their_own() -> None:
    names = sorted({partition("commands", 8, str(k)) for k in range(1000)})
    assert len(names) == 8
    assert on_cluster(*[arg for name in names for arg in ("--stream", name)]).streams == tuple(names)
    assert len({slot(name) for name in names}) == 8


# The settings on a cluster.


@pytest.mark.parametrize("streams", [["orders"], ["{jobs}high", "orders"], ["{}orders"]])
def test_on_a_cluster_a_stream_without_a_hash_tag_is_refused_by_name(streams: list[str]) -> None:
    untagged = streams[-1]
    with pytest.raises(SettingsError) as raised:
        on_cluster(*[arg for stream in streams for arg in ("--stream", stream)])
    message = str(raised.value)
    assert message.startswith("invalid setting streams")
    assert repr(untagged) in message and f"{{{untagged}}}" in message
    assert "\n" not in message


def test_on_a_cluster_from_the_environment_too() -> None:
    with pytest.raises(SettingsError, match="'orders' needs a hash tag"):
        load([], {"ASYNCPHP_REDIS_URL": "rediss+cluster://h:7000/", "ASYNCPHP_STREAM": "{a}x, orders"})


def test_on_a_cluster_tagged_streams_and_untagged_channels_are_accepted() -> None:
    loaded = on_cluster("--stream", "{orders}", "--stream", "mail{0}", "--stream", "mail{1}")
    assert loaded.streams == ("{orders}", "mail{0}", "mail{1}")
    assert on_cluster("--channel", "commands").channels == ("commands",), "a channel has no keys"


@pytest.mark.parametrize(
    "priority", [["--priority", "strict"], ["--priority", "weighted", "--weights", "2:1"]]
)
def test_on_a_cluster_a_priority_across_slots_is_refused_and_within_one_tag_accepted(
    priority: list[str],
) -> None:
    with pytest.raises(SettingsError, match=r"invalid setting priority: .*one hash tag"):
        on_cluster("--stream", "high{a}", "--stream", "low{b}", *priority)
    loaded = on_cluster("--stream", "{jobs}high", "--stream", "{jobs}low", *priority)
    assert loaded.lanes.priority is Priority(priority[1])
    assert loaded.lanes.streams == ("{jobs}high", "{jobs}low")


def test_on_a_plain_url_none_of_this_applies() -> None:
    for url in ("redis://127.0.0.1:6379/0", "redis+sentinel://127.0.0.1:26379/mymaster"):
        loaded = load(["--redis-url", url, "--stream", "orders", "--stream", "mail", "--priority", "strict"])
        assert loaded.streams == ("orders", "mail") and loaded.lanes.priority is Priority.STRICT


# Reading each slot's streams on their own.


def test_only_keeps_the_lanes_of_the_streams_named_and_the_priority() -> None:
    a = Lane("a{x}", weight=3, max_in_flight=2, rate=Rate(5, 1))
    b = Lane("b{y}", weight=1)
    c = Lane("c{x}", weight=2, rate=Rate(1, 60))
    lanes = Lanes((a, b, c), Priority.WEIGHTED)
    assert lanes.only(("c{x}", "a{x}")) == Lanes((a, c), Priority.WEIGHTED), "in the lanes' order"
    assert lanes.only(("b{y}",)) == Lanes((b,), Priority.WEIGHTED)
    assert lanes.only(()).lanes == ()


@settings(max_examples=100, deadline=None)
@given(
    lanes=st.lists(
        st.builds(
            Lane,
            st.text(alphabet="abc{}", min_size=1, max_size=5),
            st.integers(1, 9),
            st.integers(0, 5),
            st.none() | st.builds(Rate, st.integers(1, 100).map(float), st.sampled_from([1.0, 60.0])),
        ),
        max_size=6,
        unique_by=lambda lane: lane.stream,
    ),
    priority=st.sampled_from(Priority),
    data=st.data(),
)
def test_only_is_the_lanes_filtered(lanes: list[Lane], priority: Priority, data: st.DataObject) -> None:
    every = Lanes(tuple(lanes), priority)
    chosen = data.draw(st.sets(st.sampled_from([lane.stream for lane in lanes])) if lanes else st.just(set()))
    kept = every.only(tuple(chosen))
    assert kept.priority is priority
    assert kept.lanes == tuple(lane for lane in lanes if lane.stream in chosen)


def test_by_slot_groups_names_by_slot_in_their_order() -> None:
    assert slot("x") != slot("y")
    names = ("a{x}", "b{y}", "c{x}", "{y}d", "e{z}")
    assert _by_slot(names) == [("a{x}", "c{x}"), ("b{y}", "{y}d"), ("e{z}",)]
    assert _by_slot(()) == []


@settings(max_examples=100, deadline=None)
@given(names=st.lists(st.text(alphabet="ab{}", max_size=6), unique=True, max_size=10))
def test_by_slot_is_a_partition_by_slot_keeping_the_order(names: list[str]) -> None:
    groups = _by_slot(tuple(names))
    assert sorted(name for group in groups for name in group) == sorted(names)
    for group in groups:
        assert len({slot(name) for name in group}) == 1
        assert list(group) == [name for name in names if slot(name) == slot(group[0])]
    assert len({slot(group[0]) for group in groups}) == len(groups), "one group per slot"
    assert [group[0] for group in groups] == [
        name for i, name in enumerate(names) if slot(name) not in {slot(n) for n in names[:i]}
    ], "groups in the order their slots first appear"


def test_the_lanes_of_loaded_settings_split_by_slot_keep_each_streams_limits() -> None:
    loaded = on_cluster(
        "--stream", "mail{0}", "--stream", "sms{1}", "--stream", "{0}fax",
        "--stream-max-in-flight", "mail{0}=2", "--stream-rate", "sms{1}=20/min",
    )  # fmt: skip
    groups = _by_slot(loaded.lanes.streams)
    assert groups == [("mail{0}", "{0}fax"), ("sms{1}",)]
    first, second = (loaded.lanes.only(group) for group in groups)
    assert first.lanes == (Lane("mail{0}", 1, 2, None), Lane("{0}fax"))
    assert second.lanes == (Lane("sms{1}", 1, 0, Rate(20, 60)),)


# Reconnecting.


def test_the_cluster_cap_stops_the_backoff_at_one_second_and_the_default_grows_to_five() -> None:
    assert CLUSTER_BACKOFF_CAP == 1.0 and BACKOFF_CAP == 5.0
    clustered = LinkState(jitter=lambda: 1.0, cap=CLUSTER_BACKOFF_CAP)
    assert [round(clustered.failed(0.0), 3) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    default = LinkState(jitter=lambda: 1.0)
    assert [round(default.failed(0.0), 3) for _ in range(8)][-2:] == [5.0, 5.0]


@settings(max_examples=100, deadline=None)
@given(jitters=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=40))
def test_on_a_cluster_no_wait_exceeds_the_cap(jitters: list[float]) -> None:
    draws = iter(jitters)
    state = LinkState(jitter=lambda: next(draws), cap=CLUSTER_BACKOFF_CAP)
    now = 0.0
    for _ in jitters:
        delay = state.failed(now)
        assert BACKOFF_FIRST / 2 <= delay <= CLUSTER_BACKOFF_CAP
        assert state.connect_at == now + delay
        now += delay


def test_a_keeper_backs_off_with_the_cluster_cap_on_a_cluster_url_only() -> None:
    def worst(url: str) -> float:
        with contextlib.closing(
            Poller()
        ) as poller:  # an epoll object, no socket: the compiled Keeper wants one
            keeper = Keeper(cast(Source, object()), url, poller, logging.getLogger("test"))
            return max(keeper.state.failed(0.0) for _ in range(30))

    assert worst(SEED) <= CLUSTER_BACKOFF_CAP
    assert worst("rediss+cluster://h:7000/") <= CLUSTER_BACKOFF_CAP
    assert worst("redis://127.0.0.1:6379/0") >= BACKOFF_CAP / 2  # the upper half of 5 s, jittered


class _Offered:
    """A source that notes the room it is offered, and has nothing else to do."""

    last_read = 0.0

    def __init__(self) -> None:
        self.offered: list[int] = []

    def tick(self, now: float, free: int) -> None:
        self.offered.append(free)

    def wake_at(self, free: int) -> float:
        self.offered.append(free)
        return math.inf

    def misplaced(self) -> bool:
        return False


@pytest.mark.parametrize(
    ("room", "shares", "part"), [(10, 4, 3), (8, 4, 2), (1, 4, 1), (0, 4, 0), (10, 1, 10)]
)
def test_sources_that_split_the_room_are_each_offered_their_part_rounded_up(
    room: int, shares: int, part: int
) -> None:
    """A cluster's stream sources (one per slot) together read about what one source over every
    stream would, not each the whole room."""
    source = _Offered()
    with contextlib.closing(Poller()) as poller:
        keeper = Keeper(cast(Source, source), SEED, poller, logging.getLogger("test"), shares)
        keeper.state.opened()
        keeper._fds.append(-1)  # as if connected: the keeper runs its source
        keeper.turn(0.0, 15.0, room)
        keeper.wake_at(room)
    assert source.offered == [part, part]


# Replies that say the key is served elsewhere.


@pytest.mark.parametrize(
    "reply",
    [
        None,
        b"OK",
        1,
        [b"x", b"y"],
        ReplyError("ERR unknown command"),
        ReplyError("NOGROUP No such key 'jobs'"),
        ReplyError("READONLY You can't write against a read only replica."),
        ReplyError("ERR MOVED is not a code here"),
        ReplyError("MOVEDX 1 h:1"),
        b"MOVED 3999 127.0.0.1:6381",
    ],
)
def test_ignore_lets_an_ordinary_reply_or_error_pass(reply: object) -> None:
    ignore(reply)


@pytest.mark.parametrize(
    "text",
    [
        "MOVED 3999 127.0.0.1:6381",
        "ASK 3999 127.0.0.1:6381",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "CLUSTERDOWN The cluster is down",
    ],
)
def test_ignore_raises_a_connection_error_when_the_key_is_served_elsewhere(text: str) -> None:
    with pytest.raises(redis.ConnectionError, match=text.split(" ", 1)[0]):
        ignore(ReplyError(text))


def test_cluster_slots_are_read_from_the_resp2_reply() -> None:
    reply = [
        [0, 5460, [b"10.0.0.1", 7000, b"id-a"], [b"10.0.0.4", 7003, b"id-d"]],
        [5461, 10922, [b"", 7001, b"id-b", [b"hostname", b"b"]]],  # "": the node that was asked
        [10923, 16383, [None, 7002, b"id-c"]],
    ]
    assert cluster_slots(reply) == [
        SlotRange(0, 5460, "10.0.0.1", 7000),
        SlotRange(5461, 10922, "", 7001),
        SlotRange(10923, 16383, "", 7002),
    ]


class _Refused:
    """A source whose every connect is refused, the same way."""

    def open(self) -> tuple[str, str]:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:7000. Connection refused.")

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("url", "said"), [(SEED, 4), ("redis://127.0.0.1:7000/0", 20)])
def test_the_same_failure_to_connect_is_said_at_most_every_five_seconds_on_a_cluster(
    url: str, said: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A cluster's sources retry every second: twenty seconds of one failure make four lines there
    (each after the first counting the ones not said), not twenty; a single server's backoff,
    which spaces the retries itself, keeps a line for each."""
    with contextlib.closing(Poller()) as poller:
        keeper = Keeper(cast(Source, _Refused()), url, poller, logging.getLogger("refused"))
        with caplog.at_level(logging.ERROR, "refused"):
            for second in range(20):
                opening: concurrent.futures.Future[tuple[str, str]] = concurrent.futures.Future()
                try:
                    _Refused().open()
                except redis.ConnectionError as exc:
                    opening.set_exception(exc)
                keeper._opened(float(second), opening)  # as the opener's thread hands it over
    assert len(caplog.records) == said
    if url == SEED:
        assert "4 more times since it was said" in caplog.records[1].getMessage()


def test_a_redirect_refusing_a_connect_is_said_with_its_code() -> None:
    """redis-py drops the code from the text of a redirect: the log line puts it back."""
    from asyncphp.loop.keeper import _text

    assert _text(redis.exceptions.MovedError("1584 127.0.0.1:7000")) == "MOVED 1584 127.0.0.1:7000"
    assert _text(redis.exceptions.AskError("1584 127.0.0.1:7000")) == "ASK 1584 127.0.0.1:7000"
    assert _text(redis.ConnectionError("Error 111")) == "Error 111"


def test_sentinels_and_seeds_after_the_first_may_be_ipv6_on_any_python() -> None:
    """urllib refuses "a:1,[::1]:2" where Python has the fix for CVE-2024-11168 (Debian's 3.11): such
    URLs are taken apart by hand, and redacting one never raises."""
    url = "redis+sentinel://u:s3cret@a:26379,[::1]:26380/mymaster/2"
    validate(url)
    assert redact(url) == "redis+sentinel://u:***@a:26379,[::1]:26380/mymaster/2"
    seeds = cluster("rediss+cluster://u:s3cret@a:7000,[::1]:7001/?ssl_cert_reqs=none").seeds
    assert seeds == (("a", 7000), ("::1", 7001))
    assert redact("redis://u:s3cret@h:6379/0?x=1") == "redis://u:***@h:6379/0?x=1"
    assert redact("unix:///run/redis.sock") == "unix:///run/redis.sock"
