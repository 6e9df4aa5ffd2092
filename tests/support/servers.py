"""Real processes the tests talk to: a Tonewatch server, `transformers serve`, nginx; and a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Process:
    """A server process of ours on loopback: started with its output in .pytest_cache/, ready when `ready_path`
    answers 200, stopped gently (or killed, as in a crash)."""

    name = "server"
    ready_path = "/readyz"

    def _start(self, command: list[str], env: dict[str, str], log_name: str) -> None:
        (ROOT / ".pytest_cache").mkdir(exist_ok=True)
        self.log = open(ROOT / f".pytest_cache/{log_name}", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.base_url + self.ready_path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} did not become ready")

    def kill(self) -> None:
        """SIGKILL: the process dies mid-work, as in a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


class ServerProcess(_Process):
    """`tonewatch serve` with the given environment."""

    def __init__(self, env: dict[str, str], port: int):
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
        self._start(command, {**os.environ, **env}, f"server-{port}.log")


def converted_model_dir() -> Path:
    """The bundled SmolLM2 as a safetensors folder (what `make install` converted)."""
    from app.config import Settings
    from app.engine.provision import materialize, resolve_base_model

    settings = Settings()
    return materialize(resolve_base_model(settings.base_model), settings.model_cache_dir)


class TransformersServe(_Process):
    """A real OpenAI-compatible peer: `transformers serve --continuous-batching` on the bundled model."""

    name = "transformers serve"
    ready_path = "/models"

    def __init__(self, port: int):
        self.port = port
        self.model = str(converted_model_dir())
        self.base_url = f"http://127.0.0.1:{port}/v1"
        exe = Path(sys.executable).with_name("transformers")
        command = [str(exe), "serve", self.model, "--continuous-batching", "--device", "cpu"]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        self._start(command, {**os.environ, "HF_HUB_OFFLINE": "1"}, f"tfserve-{port}.log")

    def wait_ready(self, timeout: float = 120.0) -> None:
        super().wait_ready(timeout)


class Nginx:
    """A real nginx (Debian package) on loopback, rendered from docker/nginx/tonewatch.conf, in front of replicas."""

    def __init__(self, upstream_ports: list[int], workdir: Path):
        import shutil

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "tmp").mkdir(exist_ok=True)
        template = (ROOT / "docker" / "nginx" / "tonewatch.conf").read_text()
        servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in upstream_ports)
        conf = (
            template.replace("${NGINX_PID}", str(workdir / "nginx.pid"))
            .replace("${NGINX_TMP}", str(workdir / "tmp"))
            .replace("${NGINX_UPSTREAMS}", servers)
            .replace("${NGINX_LISTEN}", f"127.0.0.1:{self.port}")
        )
        (workdir / "nginx.conf").write_text(conf)
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        self.log = open(workdir / "nginx.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [exe, "-c", str(workdir / "nginx.conf"), "-p", str(workdir), "-e", "stderr"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}; see {workdir / 'nginx.log'}")
            try:
                httpx.get(self.base_url + "/healthz", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError("nginx did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
