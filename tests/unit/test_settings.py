from __future__ import annotations

import dataclasses
import os
import re
import socket
from pathlib import Path

import pytest

from asyncphp import settings as settings_mod
from asyncphp.settings import PoolAddress, Settings, SettingsError


def load(argv: list[str], env: dict[str, str]) -> Settings:
    # A real /etc/asyncphp/daemon.toml on this machine must not leak into these tests.
    return settings_mod.load(argv, env, default_config=Path("/nonexistent/daemon.toml"))


def test_defaults_without_a_config_file() -> None:
    loaded = load([], {})
    assert loaded == Settings(consumer=loaded.consumer)
    assert loaded.consumer.endswith(f"-{os.getpid()}")


def test_default_config_file_is_read_when_present(tmp_path: Path) -> None:
    config = tmp_path / "daemon.toml"
    config.write_text('channels = ["from-default-file"]\n')
    assert settings_mod.load([], {}, default_config=config).channels == ("from-default-file",)


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "daemon.toml"
    config.write_text(
        'redis_url = "redis://file:1/0"\nchannels = ["a", "b"]\n'
        'fpm_socket = "/file.sock"\nworker_script = "/file/worker.php"\n'
    )
    env = {"ASYNCPHP_FPM_SOCKET": "127.0.0.1:9000", "ASYNCPHP_WORKER_SCRIPT": "/env/worker.php"}
    settings = load(["--config", str(config), "--worker-script", "/flag/worker.php"], env)
    assert settings.redis_url == "redis://file:1/0"
    assert settings.channels == ("a", "b")
    assert settings.fpm_socket == PoolAddress(socket.AF_INET, ("127.0.0.1", 9000))
    assert settings.worker_script == "/flag/worker.php"


def test_channels_from_env_and_repeated_flags() -> None:
    assert load(["--channel", "x", "--channel", "y"], {}).channels == ("x", "y")
    assert load([], {"ASYNCPHP_CHANNEL": "p, q"}).channels == ("p", "q")


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--fpm-socket", "relative.sock"], {}, "invalid setting fpm_socket (from --fpm-socket)"),
        (["--fpm-socket", "host:99999"], {}, "fpm_socket"),
        ([], {"ASYNCPHP_WORKER_SCRIPT": "worker.php"}, "worker_script (from $ASYNCPHP_WORKER_SCRIPT)"),
        (["--worker-script", "/srv/../etc/x.php"], {}, "without '..'"),
        (["--redis-url", "http://x"], {}, "invalid setting redis_url (from --redis-url)"),
        (["--log-level", "loud"], {}, "log_level"),
        (["--channel", ""], {}, "channels (from --channel)"),
        (["--state-dir", "var/lib/asyncphp"], {}, "invalid setting state_dir (from --state-dir)"),
        ([], {"STATE_DIRECTORY": "relative"}, "invalid setting state_dir (from $STATE_DIRECTORY)"),
        (["--max-spill-bytes", "-1"], {}, "invalid setting max_spill_bytes (from --max-spill-bytes)"),
        (["--journal-fields", "maybe"], {}, "invalid setting journal_fields (from --journal-fields)"),
    ],
)
def test_invalid_settings_name_the_setting(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load(argv, env)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_state_dir_falls_back_to_systemds_state_directory(tmp_path: Path) -> None:
    assert load([], {}).state_dir == ""
    # StateDirectory= with several names gives them colon-separated, in the unit's order.
    assert load([], {"STATE_DIRECTORY": "/var/lib/asyncphp:/var/lib/other"}).state_dir == "/var/lib/asyncphp"
    state = {"STATE_DIRECTORY": "/var/lib/asyncphp"}
    assert load(["--state-dir", "/srv/spill"], state).state_dir == "/srv/spill"
    assert load([], {**state, "ASYNCPHP_STATE_DIR": "/srv/env"}).state_dir == "/srv/env"
    config = tmp_path / "daemon.toml"
    config.write_text('state_dir = ""\n')
    assert load(["--config", str(config)], state).state_dir == "", "set empty on purpose: stays off"


def test_max_spill_bytes() -> None:
    assert load([], {}).max_spill_bytes == 1 << 30
    assert load([], {"ASYNCPHP_MAX_SPILL_BYTES": "0"}).max_spill_bytes == 0


def test_journal_fields_is_a_switch(tmp_path: Path) -> None:
    assert load([], {}).journal_fields is False
    assert load(["--journal-fields", "yes"], {}).journal_fields is True
    assert load([], {"ASYNCPHP_JOURNAL_FIELDS": "off"}).journal_fields is False
    config = tmp_path / "daemon.toml"
    config.write_text("journal_fields = true\n")
    assert load(["--config", str(config)], {}).journal_fields is True


def test_flags_and_env_names_derive_from_the_setting_names() -> None:
    by_name = {s.name: s for s in settings_mod.SETTINGS}
    assert [s.name for s in settings_mod.SETTINGS] == [f.name for f in dataclasses.fields(Settings)]
    assert (by_name["channels"].flag, by_name["channels"].env) == ("--channel", "ASYNCPHP_CHANNEL")
    assert (by_name["streams"].flag, by_name["streams"].env) == ("--stream", "ASYNCPHP_STREAM")
    assert (by_name["max_in_flight"].flag, by_name["max_in_flight"].env) == (
        "--max-in-flight",
        "ASYNCPHP_MAX_IN_FLIGHT",
    )
    assert len({s.flag for s in settings_mod.SETTINGS}) == len(settings_mod.SETTINGS)
    assert len({s.env for s in settings_mod.SETTINGS}) == len(settings_mod.SETTINGS)


def test_reloadable_is_the_live_settings() -> None:
    assert {s.name for s in settings_mod.SETTINGS if s.live} == settings_mod.RELOADABLE
    assert "max_spill_bytes" in settings_mod.RELOADABLE
    assert "state_dir" not in settings_mod.RELOADABLE
    assert "channels" not in settings_mod.RELOADABLE


def test_help_lists_every_flag_with_its_env_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # so that no name is wrapped apart
    options = [
        " ".join(block.split()) for block in re.split(r"\n(?=  -)", settings_mod.parser().format_help())
    ]
    for s in settings_mod.SETTINGS:
        [option] = [option for option in options if option.startswith(f"{s.flag} ")]
        assert f"env {s.env}" in option
        assert ("; live)" in option) == s.live


def test_unknown_key_in_the_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "daemon.toml"
    config.write_text('redis_ulr = "redis://x"\n')
    with pytest.raises(SettingsError, match="unknown setting 'redis_ulr'"):
        load(["--config", str(config)], {})


def test_missing_or_broken_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="No such file"):
        load(["--config", str(tmp_path / "absent.toml")], {})
    broken = tmp_path / "broken.toml"
    broken.write_text("channels = [")
    with pytest.raises(SettingsError, match=r"broken\.toml"):
        load(["--config", str(broken)], {})


@pytest.mark.parametrize(
    ("text", "family", "address"),
    [
        ("/run/php/x.sock", socket.AF_UNIX, "/run/php/x.sock"),
        ("127.0.0.1:9000", socket.AF_INET, ("127.0.0.1", 9000)),
        ("[::1]:9000", socket.AF_INET6, ("::1", 9000)),
        ("fpm.internal:9001", socket.AF_INET, ("fpm.internal", 9001)),
    ],
)
def test_pool_address(text: str, family: socket.AddressFamily, address: object) -> None:
    parsed = PoolAddress.parse(text)
    assert (parsed.family, parsed.address) == (family, address)
    assert str(parsed) == text


def test_scheduling_settings_from_flags_env_and_toml(tmp_path: Path) -> None:
    from asyncphp.core.reading import Lane, Priority, Rate

    s = load(
        ["--stream", "high", "--stream", "low", "--priority", "weighted", "--weights", "3:1",
         "--stream-max-in-flight", "low=2", "--stream-rate", "low=20/min"],
        {},
    )  # fmt: skip
    assert s.lanes.priority is Priority.WEIGHTED
    assert s.lanes.lanes == (Lane("high", 3), Lane("low", 1, 2, Rate(20, 60)))
    env = {"ASYNCPHP_STREAM": "a,b", "ASYNCPHP_PRIORITY": "strict", "ASYNCPHP_STREAM_RATE": "a=5/s,b=1/h"}
    assert [lane.rate for lane in load([], env).lanes.lanes] == [Rate(5, 1), Rate(1, 3600)]
    config = tmp_path / "daemon.toml"
    config.write_text(
        'streams = ["a", "b", "c"]\npriority = "weighted"\nweights = [6, 3, 1]\n'
        'stream_max_in_flight = { c = 1 }\nstream_rate = { a = "100/s" }\nmove_delayed = false\n'
    )
    s = load(["--config", str(config)], {})
    assert [(lane.weight, lane.max_in_flight) for lane in s.lanes.lanes] == [(6, 0), (3, 0), (1, 1)]
    assert s.lanes.lanes[0].rate == Rate(100, 1) and not s.move_delayed
    assert load(["--stream", "a"], {}).lanes.plain, "nothing set: reading as before"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--stream", "a", "--stream-rate", "b=5/s"], "stream_rate: 'b' is not one of the streams (a)"),
        (["--stream", "a", "--stream-max-in-flight", "a=0"], "stream a: 0 is below 1"),
        (["--stream", "a", "--stream", "b", "--priority", "weighted"], "one weight per stream"),
        (["--stream", "a", "--weights", "2"], "given without priority weighted"),
        (["--stream", "a", "--priority", "first"], "'first' is not one of none, strict, weighted"),
        (["--stream", "a", "--stream-rate", "a=fast"], "'fast' is not a rate such as 100/s"),
    ],
)
def test_bad_scheduling_settings_name_the_setting(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        load(argv, {})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--stream", "a", "--stream-rate", "a=10/s", "--stream-rate", "a=5/s"],
            "stream_rate: a given twice",
        ),
        (["--stream", "a", "--stream-max-in-flight", "a=1,a=2"], "stream_max_in_flight: a given twice"),
        (["--channel", "c", "--priority", "weighted"], "priority: it orders streams, and none is given"),
        (["--stream", "a", "--stream", "a"], "streams: a stream is named twice"),
    ],
)
def test_scheduling_settings_that_cannot_mean_what_they_say(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        load(argv, {})
