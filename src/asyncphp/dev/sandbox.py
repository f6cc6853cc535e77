"""A private Redis and a private php-fpm pool in a temporary directory, for the demo and the tests.

Both servers are started as children of this process, listen only on loopback or on sockets in
the directory, and are stopped by their PID. The pool is rendered from ``fpm-pool/commands.conf``
with its paths moved into the directory, so what runs here is the shipped pool.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

STARTUP_TIMEOUT = 15.0


class SandboxError(RuntimeError):
    """A server would not start; the message says which and shows its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise SandboxError(f"{what} not ready after {timeout:.0f} s" + (f"; its log:\n{tail}" if tail else ""))


@dataclass
class Server:
    """A process this sandbox started; :meth:`stop` ends it by its PID and nothing else."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


@dataclass
class RedisServer(Server):
    port: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@dataclass
class Pool(Server):
    listen: str = ""  # a socket path, or host:port
    access_log: Path = Path()
    worker_log: Path = Path()

    def children(self) -> list[int]:
        """PIDs of the pool's worker processes (children of the master)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except (OSError, ValueError):
            return []


def find_php_fpm() -> str:
    for candidate in ["php-fpm", *sorted(glob.glob("/usr/sbin/php-fpm*"), reverse=True)]:
        found = shutil.which(candidate)
        if found:
            return found
    raise SandboxError("php-fpm not found: apt-get install php-fpm")


def start_redis(workdir: Path, port: int | None = None, extra: Sequence[str] = ()) -> RedisServer:
    port = port or free_port()
    log = workdir / f"redis-{port}.log"
    args = [
        shutil.which("redis-server") or "redis-server",
        "--bind", "127.0.0.1", "--port", str(port),
        "--save", "", "--appendonly", "no", "--daemonize", "no",
        "--dir", str(workdir), "--logfile", str(log), *extra,
    ]  # fmt: skip
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    server = RedisServer("redis", process, log, port=port)

    def answers() -> bool:
        if process.poll() is not None:
            raise SandboxError(f"redis-server exited with {process.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    try:
        wait_until(answers, STARTUP_TIMEOUT, "redis-server", log)
    except BaseException:
        server.stop()
        raise
    return server


CLUSTER_BUS_OFFSET = 10000  # a cluster node also listens on its port plus this, for the cluster bus


def cluster_port() -> int:
    """A free loopback port whose cluster-bus port (10000 above) is free too."""
    for _ in range(200):
        port = free_port()
        if port + CLUSTER_BUS_OFFSET > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
            except OSError:
                continue
        return port
    raise SandboxError("no free pair of loopback ports for a cluster node")


@dataclass
class Cluster:
    """Redis Cluster nodes on loopback: primaries and one replica each, made by redis-cli. With
    TLS, each node also listens with TLS on its ``tls_ports`` entry, and the cluster bus and
    replication use TLS."""

    nodes: list[RedisServer]
    tls_ports: list[int] = field(default_factory=list)
    ca: Path | None = None

    @property
    def url(self) -> str:
        if self.ca is not None:
            seeds = ",".join(f"127.0.0.1:{port}" for port in self.tls_ports[:3])
            return f"rediss+cluster://{seeds}/?ssl_ca_certs={self.ca}"
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:3]) + "/"

    def node(self, port: int) -> RedisServer:
        ports = self.tls_ports or [node.port for node in self.nodes]
        return self.nodes[ports.index(port)]

    def owner(self, key: str) -> int:
        """The port of the primary that serves ``key`` now, as the cluster says."""
        from asyncphp.redisurl import cluster_client

        with cluster_client(self.url, socket_timeout=2, socket_connect_timeout=2) as client:
            return int(client.get_node_from_key(key).port)

    def view(self) -> list[NodeView]:
        """Every node as the first node that answers sees them (one killed or hung is skipped)."""
        import redis

        errors = []
        for node in self.nodes:
            try:
                return cluster_nodes(node.port)
            except redis.RedisError as exc:
                errors.append(str(exc))
        raise SandboxError(f"no node of the cluster answers: {'; '.join(errors)}")

    def replica_of(self, port: int) -> int:
        """The port of the replica of the primary on ``port``."""
        view = self.view()
        primary = next(node.id for node in view if node.port == port)
        return next(node.port for node in view if node.of == primary)

    def is_primary(self, port: int) -> bool:
        return any(node.port == port and node.primary for node in self.view())

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@dataclass(frozen=True)
class NodeView:
    """One line of CLUSTER NODES."""

    id: str
    port: int
    primary: bool
    myself: bool
    of: str  # its primary's id, for a replica; "-" for a primary
    connected: bool
    slots: tuple[str, ...]  # "0-5460", "42", or "[42->-id]" for one being migrated

    def serves(self, slot: int) -> bool:
        for span in self.slots:
            if not span.startswith("["):
                low, _, high = span.partition("-")
                if int(low) <= slot <= int(high or low):
                    return True
        return False


def cluster_nodes(port: int, timeout: float = 2.0) -> list[NodeView]:
    """CLUSTER NODES as the node on ``port`` sees the cluster.

    Raises:
        redis.RedisError: the node does not answer.
    """
    import redis  # only for a cluster: the sandbox otherwise speaks raw RESP

    with redis.Redis("127.0.0.1", port, socket_timeout=timeout, socket_connect_timeout=timeout) as client:
        reply = client.execute_command("CLUSTER", "NODES")
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    views = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        flags = fields[2].split(",")
        views.append(
            NodeView(
                fields[0], int(fields[1].partition("@")[0].rpartition(":")[2]), "master" in flags,
                "myself" in flags, fields[3], fields[7] == "connected", tuple(fields[8:]),
            )
        )  # fmt: skip
    return views


def start_cluster(
    workdir: Path,
    primaries: int = 3,
    node_timeout_ms: int = 2000,
    extra: Sequence[str] = (),
    tls: tuple[Path, Path] | None = None,
) -> Cluster:
    """``primaries`` primaries and as many replicas, each in its own directory under ``workdir``;
    returns once every node says ``cluster_state:ok`` and knows every replica in sync. ``extra``:
    more redis-server arguments for every node (an ACL user); ``tls``: a certificate and its key,
    also the CA, for TLS clients, bus and replication (clients are not asked for certificates)."""
    nodes: list[RedisServer] = []
    tls_ports: list[int] = []
    try:
        for index in range(primaries * 2):
            port = cluster_port()
            home = workdir / f"node-{index}"
            home.mkdir(parents=True, exist_ok=True)
            secure: tuple[str, ...] = ()
            if tls is not None:
                tls_ports.append(cluster_port())  # with tls-cluster, the bus is this port + 10000
                cert, key = tls
                secure = (
                    "--tls-port", str(tls_ports[-1]), "--tls-cert-file", str(cert),
                    "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
                    "--tls-cluster", "yes", "--tls-replication", "yes",
                )  # fmt: skip
            nodes.append(
                start_redis(
                    home, port,
                    ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", str(node_timeout_ms), *secure, *extra),
                )
            )  # fmt: skip
        create = subprocess.run(
            [shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
             *[f"127.0.0.1:{node.port}" for node in nodes], "--cluster-replicas", "1", "--cluster-yes"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if create.returncode != 0:
            raise SandboxError(f"redis-cli --cluster create failed: {create.stdout[-2000:]}{create.stderr}")
        cluster = Cluster(nodes, tls_ports, tls[0] if tls else None)
        # The slots covered, and then every node knowing every replica and each replica in sync:
        # a replica not yet known as one, or not synced, is not promoted when its primary dies.
        wait_until(lambda: all(_cluster_ok(node.port) for node in nodes), 60, "cluster_state:ok")
        wait_until(lambda: all(_knows_replicas(node.port, primaries) for node in nodes), 60, "the replicas")
        return cluster
    except BaseException:
        for node in nodes:
            node.stop()
        raise


def _knows_replicas(port: int, count: int) -> bool:
    import redis

    replicas = [node for node in cluster_nodes(port) if not node.primary and node.connected]
    with redis.Redis("127.0.0.1", port, socket_timeout=2) as client:
        info = client.info("replication")
    return len(replicas) == count and (info["role"] == "master" or info.get("master_link_status") == "up")


def _cluster_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"CLUSTER INFO\r\n")
            return b"cluster_state:ok" in sock.recv(4096)
    except OSError:
        return False


_SETTING = re.compile(r"^\s*([A-Za-z0-9_.\[\]]+)\s*=")


def render_pool(source: Path, overrides: Mapping[str, str | None]) -> str:
    """The pool file with ``overrides`` applied: a value replaces the setting, None removes it;
    settings the file lacks are appended."""
    pending = dict(overrides)
    lines = []
    for line in source.read_text().splitlines():
        match = _SETTING.match(line)
        if match and match.group(1) in pending:
            value = pending.pop(match.group(1))
            if value is not None:
                lines.append(f"{match.group(1)} = {value}")
            continue
        lines.append(line)
    lines += [f"{key} = {value}" for key, value in pending.items() if value is not None]
    return "\n".join(lines) + "\n"


def start_pool(
    workdir: Path,
    pool_conf: Path,
    overrides: Mapping[str, str | None] | None = None,
) -> Pool:
    """php-fpm in the foreground with the pool from ``pool_conf``, moved into ``workdir``.

    The pool's own user, group and socket owner are dropped: unprivileged, php-fpm cannot switch
    to them, and as root (CI) the workers then run as root with ``-R`` and can reach ``workdir``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    access_log, worker_log, log = workdir / "access.log", workdir / "worker.log", workdir / "php-fpm.log"
    settings: dict[str, str | None] = {
        "user": None,
        "group": None,
        "listen.owner": None,
        "listen.group": None,
        "listen": str(workdir / "commands.sock"),
        "access.log": str(access_log),
        "env[ASYNCPHP_WORKER_LOG]": str(worker_log),
    }
    settings.update(overrides or {})
    conf = workdir / "php-fpm.conf"
    conf.write_text(
        f"[global]\npid = {workdir / 'php-fpm.pid'}\nerror_log = {log}\ndaemonize = no\n\n"
        + render_pool(pool_conf, settings)
    )
    args = [find_php_fpm(), "--nodaemonize", "--fpm-config", str(conf)]
    if os.geteuid() == 0:
        args.append("--allow-to-run-as-root")
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    listen = str(settings["listen"])
    pool = Pool("php-fpm", process, log, listen=listen, access_log=access_log, worker_log=worker_log)

    def listening() -> bool:
        # Connecting to probe would make an ondemand pool fork a child; the log line does not.
        if process.poll() is not None:
            raise SandboxError(
                f"php-fpm exited with {process.returncode}: {log.read_text(errors='replace')[-2000:]}"
            )
        return log.exists() and "ready to handle connections" in log.read_text(errors="replace")

    try:
        wait_until(listening, STARTUP_TIMEOUT, "php-fpm", log)
    except BaseException:
        pool.stop()
        raise
    return pool


def daemon_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a daemon it starts, with ``env`` on top: without what the
    service manager told this process (a container's payload, a unit running the tests), which is
    not for the daemon; a test that wants it passes it in ``env``."""
    inherited = {k: v for k, v in os.environ.items() if k not in SERVICE_MANAGER_VARIABLES}
    return {**inherited, **(env or {})}


SERVICE_MANAGER_VARIABLES = frozenset(
    {
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "JOURNAL_STREAM",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
    }
)


def start_daemon(
    redis_url: str,
    pool_socket: str,
    worker_script: Path,
    *extra: str,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Server:
    """``python -m asyncphp.loop.daemon`` as a child; its log goes to ``log``, or to our stderr."""
    args = [
        sys.executable, "-m", "asyncphp.loop.daemon",
        "--redis-url", redis_url, "--fpm-socket", pool_socket,
        # Absolute, not resolved: a worker found through a symlink (Composer's vendor/) reads
        # the path it was asked by, as the daemon's own worker_script gives it.
        "--worker-script", os.path.abspath(worker_script), *extra,
    ]  # fmt: skip
    full_env = daemon_env(env)
    output = log.open("ab") if log else None
    try:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=output, env=full_env)
    finally:
        if output:
            output.close()
    return Server("asyncphp-daemon", process, log or Path("/dev/stderr"))


S = TypeVar("S", bound=Server)


@dataclass
class Sandbox:
    """Servers started together and stopped together, in reverse order."""

    workdir: Path
    servers: list[Server] = field(default_factory=list)

    def add(self, server: S) -> S:
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in reversed(self.servers):
            with contextlib.suppress(Exception):
                server.stop()
        self.servers.clear()


@contextlib.contextmanager
def private_servers(
    prefix: str, pool_conf: Path, overrides: Mapping[str, str | None] | None = None
) -> Iterator[tuple[Sandbox, RedisServer, Pool]]:
    """A Redis and a pool from ``pool_conf`` in a new temp dir; all stopped and removed on exit.
    More servers (a daemon) can join through :meth:`Sandbox.add`."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        sandbox = Sandbox(Path(tmp))
        try:
            redis = sandbox.add(start_redis(sandbox.workdir))
            pool = sandbox.add(start_pool(sandbox.workdir / "pool", pool_conf, overrides))
            yield sandbox, redis, pool
        finally:
            sandbox.close()


def subscribed(url: str, channel: str, timeout: float = STARTUP_TIMEOUT, durable: bool = False) -> None:
    """Wait for a daemon to listen on ``channel`` (``durable``: to read the stream of that name)."""
    import redis

    client = redis.Redis.from_url(url)

    def reading() -> bool:
        if not durable:
            return bool(client.pubsub_numsub(channel)[0][1] > 0)
        # Redis 7.0 registers a consumer only once it has been given entries: look for the read.
        return any(c.get("cmd") == "xreadgroup" for c in client.client_list())

    try:
        wait_until(reading, timeout, f"a daemon on {channel}")
    finally:
        client.close()


def demo(pool_conf: Path, worker: Path, messages: int, timeout: float) -> int:
    """The original's scenario on private servers; prints the worker's log. Returns an exit status."""
    try:
        with private_servers("asyncphp-demo-", pool_conf) as (sandbox, redis, pool):
            print(f"demo: redis on {redis.url}, pool on {pool.listen}, in {sandbox.workdir}", file=sys.stderr)
            sandbox.add(start_daemon(redis.url, pool.listen, worker))
            subscribed(redis.url, "commands")

            started = time.monotonic()
            for _ in range(messages):
                caller = [sys.executable, "-m", "asyncphp.caller", "--redis-url", redis.url]
                subprocess.run(caller, check=True)

            def finished() -> bool:
                return pool.access_log.exists() and len(pool.access_log.read_text().splitlines()) >= messages

            wait_until(finished, timeout, f"{messages} finished jobs")
            elapsed = time.monotonic() - started
            print(f"\n== worker log ({pool.worker_log}) ==\n{pool.worker_log.read_text()}", flush=True)
            print(f"== pool access log ==\n{pool.access_log.read_text()}", flush=True)
            print(f"demo: {messages} jobs finished {elapsed:.2f} s after the first publish", file=sys.stderr)
            return 0
    except (SandboxError, subprocess.CalledProcessError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1


def dev(pool_conf: Path, worker: Path, extra: Sequence[str] = ()) -> int:
    """A private Redis and pool in a temp dir, the daemon in the foreground; Ctrl-C stops all."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with private_servers("asyncphp-dev-", pool_conf) as (sandbox, redis, pool):
            print(
                f"asyncphp dev: redis {redis.url} · pool {pool.listen} · worker {worker}\n"
                f"  publish with: {sys.executable} -m asyncphp.caller --redis-url {redis.url} key=value\n"
                f"  worker log:   {pool.worker_log}\n"
                "  Ctrl-C stops everything.",
                flush=True,
            )
            daemon = sandbox.add(start_daemon(redis.url, pool.listen, worker, *extra))
            # Ctrl-C reaches the whole process group: the daemon drains and exits, and only then
            # are Redis and the pool stopped here.
            return daemon.process.wait()
    except SandboxError as exc:
        print(f"asyncphp dev: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asyncphp.dev.sandbox", description=demo.__doc__)
    parser.add_argument("--pool-conf", type=Path, required=True, help="fpm-pool/commands.conf")
    parser.add_argument("--worker", type=Path, required=True, help="fpm-pool/worker.php")
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the jobs")
    args = parser.parse_args(argv)
    return demo(args.pool_conf, args.worker, args.messages, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
