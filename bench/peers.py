"""Real peer servers for side-by-side benchmarks, and a streamed closed-loop load that treats them all alike.

Only one server runs at a time (two cores: a second idle server would still steal cycles), so every section
starts, measures and stops them in turn, alternating, and quotes medians over the rounds.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.common import RESULTS, ROOT, summary


def converted_model_dir() -> Path:
    """The converted SmolLM2 folder under models/cache (what the Tonewatch server loads)."""
    from app.config import Settings
    from app.engine.provision import materialize, resolve_base_model

    settings = Settings()
    return materialize(resolve_base_model(settings.base_model), settings.model_cache_dir)


def bundled_gguf() -> Path:
    from app.engine.provision import BUNDLED_BASE_MODEL, resolve_base_model

    return resolve_base_model(BUNDLED_BASE_MODEL).path


class Process:
    """A server process whose log goes to bench/results/tmp/<name>.log."""

    name = "server"

    def __init__(
        self, argv: list[str], port: int, ready_path: str, env: dict[str, str] | None = None, cwd: Path = ROOT
    ):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        with socket.socket() as probe:  # a leftover server on the port would be measured instead of this one
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise RuntimeError(f"port {port} is already in use; stop what listens there first")
        RESULTS.joinpath("tmp").mkdir(parents=True, exist_ok=True)
        self.log = open(RESULTS / "tmp" / f"{self.name}-{port}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + ready_path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.close()
        raise RuntimeError(f"{self.name} did not become ready; see {self.log.name}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


class Tonewatch(Process):
    name = "tonewatch"

    def __init__(self, port: int = 8765, root: str | None = None, **env: str):
        # root: serve another checkout (an earlier commit) with this venv, for before/after figures
        argv = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
        super().__init__(argv, port, "/readyz", env, cwd=Path(root) if root else ROOT)
        self.model = httpx.get(self.url + "/v1/models", timeout=10).json()["data"][0]["id"]


class TransformersServe(Process):
    """`transformers serve --continuous-batching` on the same converted model (model id = the folder path)."""

    name = "transformers-serve"

    def __init__(self, port: int = 8766):
        self.model = str(converted_model_dir())
        exe = Path(sys.executable).with_name("transformers")
        argv = [str(exe), "serve", self.model, "--continuous-batching", "--device", "cpu"]
        super().__init__([*argv, "--host", "127.0.0.1", "--port", str(port)], port, "/v1/models")


LLAMA_PYTHON = ROOT / ".venv-llama" / "bin" / "python"  # `make bench-deps` builds it


class LlamaCpp(Process):
    """llama-cpp-python's OpenAI server on the bundled Q4_1 GGUF (its own venv: `make bench-deps`)."""

    name = "llama-cpp"

    def __init__(self, port: int = 8767, threads: int = 2):
        gguf = bundled_gguf()
        self.model = gguf.stem
        argv = [str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", self.model]
        argv += ["--n_threads", str(threads), "--n_ctx", "2048", "--host", "127.0.0.1", "--port", str(port)]
        super().__init__(argv, port, "/v1/models")

    @staticmethod
    def available() -> bool:
        return LLAMA_PYTHON.exists()


async def streamed_load(url: str, model: str, concurrency: int, per_client: int, body_for) -> dict:
    """`concurrency` clients each stream `per_client` chat completions back to back. Tokens are the server's own
    usage count (else its content chunks); TTFT is the first chunk with content."""
    latencies: list[float] = []
    ttfts: list[float] = []
    tokens = 0
    failures = 0

    async def one(http: httpx.AsyncClient, body: dict) -> None:
        nonlocal tokens, failures
        t0 = time.perf_counter()
        first = None
        used = pieces = 0
        try:
            async with http.stream("POST", url + "/v1/chat/completions", json={**body, "model": model}) as r:
                if r.status_code != 200:
                    failures += 1
                    await r.aread()
                    return
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                        pieces += 1
                        if first is None:
                            first = time.perf_counter() - t0
                    if chunk.get("usage"):
                        used = chunk["usage"]["completion_tokens"]
        except httpx.HTTPError:
            failures += 1
            return
        latencies.append(time.perf_counter() - t0)
        if first is not None:
            ttfts.append(first)
        tokens += used or pieces  # a server that sends no usage streams one token per chunk

    async def client(idx: int, http: httpx.AsyncClient) -> None:
        for j in range(per_client):
            await one(http, body_for(idx, j))

    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "failures": failures,
        "wall_s": wall,
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
        "latency_s": summary(latencies),
        "ttft_s": summary(ttfts),
    }


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)
