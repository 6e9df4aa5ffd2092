"""Fixtures for the store integration tests: a real Redis (db 13, a unique key prefix per test, keys removed after),
a throwaway redis-server we can kill and restart, and a parametrized store factory ("redis" | "sqlite")."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from app.store.base import SessionStore
from app.store.redis_store import RedisStore
from app.store.sqlite_store import SQLiteStore
from tests.support.redis_servers import RedisServer, answers
from tests.support.servers import free_port

TEST_DB = 13


@pytest.fixture
def redis_server(tmp_path) -> Iterator[Callable[..., RedisServer]]:
    """Factory: redis_server(persistent=True) -> a started RedisServer; all are killed at teardown."""
    if shutil.which("redis-server") is None:
        pytest.fail(
            "redis-server is not installed: run `make system-deps` (Debian package redis-server); "
            "the Redis suites must run, not skip"
        )
    servers: list[RedisServer] = []

    def make(persistent: bool = True) -> RedisServer:
        server = RedisServer(free_port(), tmp_path / f"redis-{len(servers)}", persistent)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.kill()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The shared test Redis, db 13: $TONEWATCH_TEST_REDIS_URL, else 127.0.0.1:6379, else a redis-server we start."""
    url = os.environ.get("TONEWATCH_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{TEST_DB}")
    if answers(url):
        yield url
        return
    if shutil.which("redis-server") is None:
        pytest.fail(f"no Redis at {url} and no redis-server binary to start one: run `make system-deps`")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(free_port(), Path(tmp), persistent=False)
        server.start()
        try:
            yield f"redis://127.0.0.1:{server.port}/{TEST_DB}"
        finally:
            server.kill()


def cleanup_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_prefix(redis_url) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted afterwards."""
    prefix = f"twtest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    cleanup_prefix(redis_url, prefix)


class Backend:
    """Opens stores of one kind over the same data (same Redis prefix or SQLite file); closes them at teardown."""

    def __init__(self, kind: str, opener: Callable[..., SessionStore]):
        self.kind = kind
        self._opener = opener
        self.opened: list[SessionStore] = []

    def open(self, **kw: Any) -> SessionStore:
        store = self._opener(**kw)
        self.opened.append(store)
        return store


def free_cluster_port() -> int:
    """A free port p <= 55535 whose cluster bus port p + 10000 is free too (Redis Cluster's rule)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 55535)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterServers:
    """A real 3-master Redis Cluster on loopback: three redis-server --cluster-enabled yes, joined by
    redis-cli --cluster create."""

    def __init__(self, workdir: Path, masters: int = 3):
        self.ports = [free_cluster_port() for _ in range(masters)]
        self.procs: list[subprocess.Popen] = []
        try:
            self._start(workdir)
        except BaseException:
            self.stop()  # a half-started cluster must not outlive the test run
            raise

    def _start(self, workdir: Path) -> None:
        for port in self.ports:
            d = workdir / f"node-{port}"
            d.mkdir(parents=True, exist_ok=True)
            self.procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(d / "nodes.conf"),
                        "--cluster-node-timeout",
                        "2000",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(d),
                        "--logfile",
                        str(d / "redis.log"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            deadline = time.monotonic() + 10
            while not answers(f"redis://127.0.0.1:{port}/0"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"cluster node {port} did not start")
                time.sleep(0.05)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in self.ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 20
        while True:  # wait until every slot is served
            info = subprocess.run(
                ["redis-cli", "-p", str(self.ports[0]), "cluster", "info"], capture_output=True, text=True, timeout=5
            ).stdout
            if "cluster_state:ok" in info:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster did not become ok: {info}")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return "rediscluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory) -> Iterator[RedisClusterServers]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server / redis-cli are not installed: run `make system-deps`")
    cluster = RedisClusterServers(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["redis", "sqlite", "cluster"])
async def backend(request, tmp_path) -> AsyncIterator[Backend]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        b = Backend("redis", lambda **kw: RedisStore(url, prefix=prefix, **kw))
    elif request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        prefix = f"twtest:{uuid.uuid4().hex[:12]}:"
        b = Backend("cluster", lambda **kw: RedisStore(cluster.url, prefix=prefix, **kw))
    else:
        path = tmp_path / "history.db"
        b = Backend("sqlite", lambda **kw: SQLiteStore(path, **kw))
    yield b
    for store in b.opened:
        await store.close()


@pytest.fixture
async def store(backend) -> SessionStore:
    return backend.open()
