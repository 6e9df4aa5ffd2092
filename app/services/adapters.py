"""Adapter administration as the admin API sees it, whatever the backend.

Embedded: the adapter registry (validate -> install on the worker -> route). Behind an upstream, adapters live in
the upstream: vLLM's runtime LoRA endpoints after our own validation, or 501 for engines without them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Protocol, TypedDict

from app.backends.upstream import UpstreamBackend
from app.engine.adapter_files import inspect_files
from app.engine.adapter_paths import AdapterFolderMissing, InvalidAdapterError
from app.engine.adapters import AdapterRegistry
from app.engine.profile import profile_files
from app.errors import Conflict, InvalidAdapter, NotFound, NotSupportedByBackend, UpstreamRejected


class AdapterService(Protocol):
    shares_adapters: bool  # False behind an upstream: it owns its adapters; only routing is shared

    async def listing(self) -> dict[str, Any]: ...
    async def load(self, name: str, path: str, activate: bool = False) -> dict[str, Any]: ...
    async def activate(self, name: str) -> dict[str, Any]: ...
    async def unload(self, name: str) -> None: ...
    async def profile(self, name: str) -> dict[str, Any]: ...
    def active(self) -> str | None: ...
    def relative_path(self, name: str) -> str | None: ...
    async def sync(self, wanted: dict[str, str], default: str | None) -> dict[str, str]:
        """Bring this replica in line with the shared manifest; name -> error for what it could not apply."""


class EmbeddedAdapters:
    shares_adapters = True

    def __init__(self, registry: AdapterRegistry):
        self.registry = registry

    def active(self) -> str | None:
        return self.registry.active

    def relative_path(self, name: str) -> str | None:
        record = self.registry.adapters.get(name)
        if record is None:
            return None
        root = Path(self.registry.root).resolve()
        path = record.spec.path
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    async def sync(self, wanted: dict[str, str], default: str | None) -> dict[str, str]:
        errors: dict[str, str] = {}
        for name, path in wanted.items():
            current = self.relative_path(name)
            if current == path:
                continue
            try:
                if current is not None:  # the same name now points at other files: reload it
                    await self.registry.unload(name)
                await self.registry.load(name, path)
            except Exception as exc:
                errors[name] = getattr(exc, "message", str(exc))
        if default is not None and default not in self.registry.adapters:
            errors.setdefault(default, "it is the shared default, but it is not loaded on this replica")
        elif self.registry.active != default:
            await self.registry.activate(default)
        for name in set(self.registry.adapters) - set(wanted):
            if name == self.registry.active:
                continue
            try:
                await self.registry.unload(name)
            except Exception as exc:
                errors[name] = f"not unloaded: {getattr(exc, 'message', exc)}"
        return errors

    async def listing(self) -> dict[str, Any]:
        registry = self.registry
        data = [r.public(active=(name == registry.active)) for name, r in registry.adapters.items()]
        return {"active": registry.active or registry.base_name, "base": registry.base_name, "data": data}

    async def load(self, name: str, path: str, activate: bool = False) -> dict[str, Any]:
        record = await self.registry.load(name, path, activate=activate)
        return record.public(active=self.registry.active == name)

    async def activate(self, name: str) -> dict[str, Any]:
        await self.registry.activate(None if name == self.registry.base_name else name)
        return await self.listing()

    async def unload(self, name: str) -> None:
        await self.registry.unload(name)

    async def profile(self, name: str) -> dict[str, Any]:
        return await self.registry.profile(name)


class GatewayAdapters:
    """Adapters behind an upstream. Routing (which model requests naming none get) is Tonewatch's own and works
    with any upstream; load/unload forward to vLLM's runtime LoRA endpoints after Tonewatch's own validation of the
    name and files (inside the adapter root, safetensors only, rank and size bounds); other engines answer 501."""

    shares_adapters = False

    def __init__(
        self,
        backend: UpstreamBackend,
        *,
        root: Path,
        upstream_root: str | None,
        kind: str,
        max_rank: int,
        max_bytes: int,
    ):
        self.backend = backend
        self.root = Path(root)
        self.upstream_root = upstream_root  # the adapter root as the upstream sees it (same path by default)
        self.kind = kind  # "vllm" | "openai" | "auto" (decided on first use)
        self.max_rank = max_rank
        self.max_bytes = max_bytes
        self._paths: dict[str, Path] = {}  # adapters loaded through us: name -> local folder (for profiles)
        self._lock = asyncio.Lock()

    def active(self) -> str | None:
        return self.backend.active

    def relative_path(self, name: str) -> str | None:
        return None

    async def sync(self, wanted: dict[str, str], default: str | None) -> dict[str, str]:
        self.backend.route_default(default)  # routing is shared; the upstream owns its adapters
        return {}

    async def _is_vllm(self) -> bool:
        if self.kind == "auto":
            models = await self.backend.list_models()
            self.kind = "vllm" if any(m.get("owned_by") == "vllm" for m in models) else "openai"
        return self.kind == "vllm"

    async def _require_vllm(self, what: str) -> None:
        if not await self._is_vllm():
            raise NotSupportedByBackend(
                f"{what} needs an upstream with a runtime adapter API (vLLM's /v1/load_lora_adapter); this upstream "
                "does not have one: load adapters in the engine itself, then route to them with "
                "POST /admin/adapters/{name}/activate or the request's `model`"
            )

    async def listing(self) -> dict[str, Any]:
        models = await self.backend.list_models()
        base = next((m["id"] for m in models if not m.get("parent")), models[0]["id"] if models else "")
        data = [
            {
                "name": m["id"],
                "type": "upstream",
                "peft_type": "",
                "rank": None,
                "alpha": None,
                "target_modules": [],
                "trainable_params": 0,
                "size_bytes": 0,
                "path": str(self._paths.get(m["id"], "")),
                "loaded_at": float(m.get("created") or 0),
                "requests_served": 0,
                "mixable": True,
                "active": m["id"] == (self.backend.active or base),
                "parent": m.get("parent"),
            }
            for m in models
            if m.get("parent")
        ]
        return {"active": self.backend.active or base, "base": base, "data": data}

    async def load(self, name: str, path: str, activate: bool = False) -> dict[str, Any]:
        if name in ("default", "base"):
            raise Conflict(f"{name!r} is reserved (the active-model alias or a metric label)", param="name")
        await self._require_vllm("loading an adapter")
        try:
            spec = await asyncio.to_thread(inspect_files, self.root, path, name, self.max_rank, self.max_bytes)
        except AdapterFolderMissing as exc:
            raise NotFound(str(exc), param="path") from exc
        except InvalidAdapterError as exc:
            raise InvalidAdapter(str(exc), param="path") from exc
        relative = spec.path.relative_to(self.root.resolve())
        lora_path = str(Path(self.upstream_root) / relative) if self.upstream_root else str(spec.path)
        async with self._lock:
            try:
                await self.backend.load_lora_adapter(name, lora_path)
            except UpstreamRejected as exc:
                raise InvalidAdapter(f"the upstream refused the adapter: {exc.message}", param="path") from exc
            self._paths[name] = spec.path
        if activate:
            await self.activate(name)
        return {
            "name": name,
            "type": spec.kind,
            "peft_type": spec.peft_type,
            "rank": spec.rank,
            "alpha": spec.alpha,
            "target_modules": spec.target_modules,
            "trainable_params": 0,
            "size_bytes": spec.size_bytes,
            "path": str(spec.path),
            "loaded_at": time.time(),
            "requests_served": 0,
            "mixable": True,
            "active": self.backend.active == name,
        }

    async def activate(self, name: str) -> dict[str, Any]:
        ids = {m["id"] for m in await self.backend.list_models()}
        if name not in ids:
            raise NotFound(f"model {name!r} is not served by the upstream", param="name")
        roots = [m["id"] for m in await self.backend.list_models() if not m.get("parent")]
        self.backend.route_default(None if roots and name == roots[0] else name)
        return await self.listing()

    async def unload(self, name: str) -> None:
        await self._require_vllm("unloading an adapter")
        if self.backend.active == name:
            raise Conflict(f"adapter {name!r} is the active default; activate another model first")
        async with self._lock:
            try:
                await self.backend.unload_lora_adapter(name)
            except UpstreamRejected as exc:
                if exc.status == 404:
                    raise NotFound(f"adapter {name!r} is not loaded in the upstream", param="name") from exc
                raise
            self._paths.pop(name, None)
            self.backend.forget_models()

    async def profile(self, name: str) -> dict[str, Any]:
        folder = self._paths.get(name)
        if folder is None:
            raise NotFound(
                f"adapter {name!r} was not loaded through Tonewatch, so its files are not known here; "
                "profile it from its folder with `tonewatch eval` or load it through the admin API",
                param="name",
            )
        spec = await asyncio.to_thread(
            inspect_files, self.root, str(folder.relative_to(self.root.resolve())), name, self.max_rank, self.max_bytes
        )
        try:
            return await asyncio.to_thread(profile_files, spec.weights, spec.config, name, **_geometry(spec.config))
        except InvalidAdapterError as exc:
            raise NotSupportedByBackend(str(exc)) from exc


class Geometry(TypedDict, total=False):
    """profile_files' attention-geometry arguments."""

    num_heads: int | None
    num_kv_heads: int | None
    head_dim: int | None


def _geometry(config: dict) -> Geometry:
    """Attention geometry from the adapter's base model config, when that is a readable local folder."""
    import json

    base = config.get("base_model_name_or_path")
    path = Path(base) / "config.json" if isinstance(base, str) and base else None
    if path is None or not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    heads = cfg.get("num_attention_heads")
    hidden = cfg.get("hidden_size")
    return {
        "num_heads": heads,
        "num_kv_heads": cfg.get("num_key_value_heads") or heads,
        "head_dim": cfg.get("head_dim") or (hidden // heads if heads and hidden else None),
    }
