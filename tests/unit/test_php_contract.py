"""The PHP client holds the same add script as the daemon, and encodes payloads the same way."""

from __future__ import annotations

import hashlib
import json
import subprocess

from asyncphp.caller import _json
from asyncphp.wire import scripts
from asyncphp.wire.body import Limits
from asyncphp.wire.keys import Keys
from tests.conftest import ROOT


def php(code: str, *args: str) -> str:
    done = subprocess.run(
        ["php", "-r", f"require '{ROOT / 'php' / 'autoload.php'}'; {code}", *args],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout


def test_the_php_client_holds_the_daemon_s_add_script() -> None:
    assert php("echo sha1(Asyncphp\\Scripts::ADD);") == hashlib.sha1(scripts.ADD.encode()).hexdigest()


def test_php_and_python_encode_a_payload_to_the_same_bytes() -> None:
    payloads = [
        {},
        {"user": 42, "name": "é/✓\u2028\u2029", "ctl": '\x01\t\n"\\', "emoji": "😀"},
        {"list": [1, 2.5, 1.0, -0.0, None, True, False], "nested": {"a": {"b": ["c", {"d": 1}]}}},
        {"big": 2**62, "small": -(2**62), "float": 0.1 + 0.2, "order": {"z": 1, "a": 2}},
    ]
    for payload in payloads:
        # The PHP side gets it through json_decode(), as an app's array would look.
        encoded = php(
            "echo Asyncphp\\Payload::encode(json_decode($argv[1], true, 512, JSON_OBJECT_AS_ARRAY));",
            json.dumps(payload),
        )
        assert encoded == _json(payload, Limits()), payload


def test_the_php_client_names_a_stream_s_keys_as_the_daemon_does() -> None:
    """The keys ADD takes, as StreamPublisher.php spells them for stream $s and unique key $key."""
    s, key = "$s", "$key"
    spelled = ", ".join([s, *(f'"{name}"' for name in Keys(s).adding(key)[1:])])
    assert f"[{spelled}]" in (ROOT / "php" / "src" / "StreamPublisher.php").read_text()
