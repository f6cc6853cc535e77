"""The things a benchmark drives or measures with: nginx + wrk, publishers, a bare subscriber,
the worker's log, and /proc figures for a process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis

from asyncphp.dev.sandbox import SandboxError, Server, free_port, wait_until

BENCH_DIR = Path(__file__).resolve().parent
WORKER = BENCH_DIR / "php" / "worker.php"


def start_nginx(workdir: Path, pool_socket: str, worker: Path = WORKER) -> tuple[Server, int]:
    """nginx in the foreground on a free loopback port, passing every request to the pool."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    temp = " ".join(
        f"{kind}_temp_path {workdir / kind};" for kind in ("client_body", "fastcgi", "proxy", "uwsgi", "scgi")
    )
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
daemon off; {user} worker_processes auto; pid {workdir / "nginx.pid"}; error_log {workdir / "error.log"};
events {{ worker_connections 4096; }}
http {{
    access_log off; {temp}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME {worker};
            fastcgi_pass unix:{pool_socket};
        }}
    }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen([nginx, "-c", str(conf), "-p", str(workdir)], stdin=subprocess.DEVNULL)
    server = Server("nginx", process, workdir / "error.log")

    def listening() -> bool:
        if process.poll() is not None:
            raise SandboxError(f"nginx exited with {process.returncode}")
        import socket

        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, 10, "nginx")
    return server, port


def wrk(port: int, connections: int, seconds: float) -> tuple[float, int]:
    """Requests per second that wrk drives through nginx, and how many requests it made."""
    threads = min(2, connections)
    done = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    if not match:
        raise RuntimeError(f"wrk printed no rate:\n{done.stdout}{done.stderr}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    if non_2xx:
        raise RuntimeError(f"wrk saw {non_2xx.group(1)} failed requests")
    requests = re.search(r"(\d+) requests in", done.stdout)
    if not requests:
        raise RuntimeError(f"wrk printed no request count:\n{done.stdout}")
    return float(match.group(1)), int(requests.group(1))


def publish_burst(
    url: str, count: int, channel: str = "commands", chunk: int = 1000, durable: bool = False
) -> None:
    """``count`` numbered messages, in pipelines of ``chunk``; ``durable`` adds them to a stream."""
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        if durable:
            pipe.xadd(channel, {"payload": json.dumps({"n": i})})
        else:
            pipe.publish(channel, json.dumps({"n": i}))
        if i % chunk == chunk - 1:
            pipe.execute()
    pipe.execute()
    client.close()


def publish_paced(url: str, rate: float, seconds: float, channel: str = "commands") -> int:
    """Messages carrying their send time, at ``rate`` per second; returns how many were sent."""
    client = redis.Redis.from_url(url)
    count = int(rate * seconds)
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        client.publish(channel, json.dumps({"n": i, "sent": f"{time.time():.6f}"}))
    client.close()
    return count


BARE_SUBSCRIBER = """
import sys, time, json, redis
r = redis.Redis.from_url(sys.argv[1])
p = r.pubsub(ignore_subscribe_messages=True)
p.subscribe(sys.argv[2])
out = open(sys.argv[3], "w")
expected = int(sys.argv[4])
for _ in range(expected):
    m = None
    while m is None:
        m = p.get_message(timeout=None)
    now = time.time()
    message = json.loads(m["data"])
    out.write(f"{message['n']} {message['sent']} {now:.6f}\\n")
out.close()
"""


def start_bare_subscriber(url: str, channel: str, out: Path, expected: int) -> subprocess.Popen[bytes]:
    """The latency floor: a redis-py (hiredis) subscriber that only notes when each message came."""
    return subprocess.Popen([sys.executable, "-c", BARE_SUBSCRIBER, url, channel, str(out), str(expected)])


class LineCounter:
    """Counts lines appended to a file, reading only what is new each time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._offset = 0

    def update(self) -> int:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return self.count
        end = data.rfind(b"\n") + 1
        self.count += data.count(b"\n", 0, end)
        self._offset += end
        return self.count

    def wait_for(self, count: int, timeout: float) -> float:
        """Seconds until ``count`` lines were there (polled every millisecond)."""
        start = time.monotonic()
        while self.update() < count:
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{self.path}: {self.count} of {count} lines after {timeout:.0f} s")
            time.sleep(0.001)
        return time.monotonic() - start


def latencies(path: Path, skip: int = 0) -> list[float]:
    """Milliseconds from publish to arrival, from lines ``n sent arrived`` (the worker's and the
    bare subscriber's), leaving out messages numbered below ``skip``."""
    found = []
    for line in path.read_text().splitlines():
        n, sent, arrived = line.split()
        if int(n) >= skip:
            found.append((float(arrived) - float(sent)) * 1000)
    return found


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (nginx's master and workers)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += cpu_seconds(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
    return total


# A journald of our own, in a private mount namespace: tmpfs over /run (so its sockets and its
# volatile journal live and die with the namespace, and nothing on the shared filesystem changes),
# rate limits off as the unit sets them (LogRateLimitIntervalSec=0). Then the daemon, told it runs
# under systemd (JOURNAL_STREAM) and, as under the unit, with its stderr connected to a journal
# stream (systemd-cat); with --journal-fields, it sends entries of its own instead.
JOURNAL_WRAPPER = r"""
set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal /run/bench
printf '[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\nRuntimeMaxUse=512M\n' >/run/bench/journald.conf
mount --bind /run/bench/journald.conf /etc/systemd/journald.conf
/lib/systemd/systemd-journald </dev/null >/dev/null 2>&1 &
echo $! >"$1"
shift
for _ in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
[ -S /run/systemd/journal/socket ]
# JOURNAL_STREAM names the stream by device and inode, as systemd sets it for a unit.
exec systemd-cat --identifier=asyncphp-daemon --level-prefix=true \
    bash -c 'export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); exec "$@"' daemon "$@"
"""


def journal_available() -> str:
    """Why a private journald cannot be started here ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root (a private mount namespace)"
    if not Path("/lib/systemd/systemd-journald").exists() or not shutil.which("systemd-cat"):
        return "no systemd-journald or systemd-cat (Debian's systemd package)"
    try:
        import systemd.journal  # noqa: F401
    except ImportError:
        return "python-systemd is not installed"
    return ""


def under_journald(pidfile: Path) -> list[str]:
    """A command prefix: run the rest under a private journald, whose PID goes to ``pidfile``."""
    return ["unshare", "-m", "bash", "-c", JOURNAL_WRAPPER, "journal", str(pidfile)]


def journal_lines(journald_pid: int, identifier: str) -> int:
    """Job lines from ``identifier`` in the private journal of ``journald_pid``, as the daemon
    writes them when it knows journald reads its stderr (a priority, no timestamp of its own)."""
    done = subprocess.run(
        ["nsenter", "-t", str(journald_pid), "-m", "journalctl", "-q", "--no-pager", "-o", "cat",
         f"SYSLOG_IDENTIFIER={identifier}"],
        capture_output=True, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    return sum(b" on commands: status " in line and not line[:1].isdigit() for line in lines)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")
