"""Adapter folders: names, paths and files — everything decided before a tensor is read.

A name must be one PEFT can hold; a path must stay inside the adapter root (symlinks resolved); the config is
bounded JSON; weights are safetensors only (pickles are never loaded).
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch

CONFIG_NAME = "adapter_config.json"


WEIGHTS_NAME = "adapter_model.safetensors"


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


MAX_CONFIG_BYTES = 1 * 2**20


# PEFT keys adapters by name inside module paths and torch ModuleDicts: no "." and no ModuleDict attribute names.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


# Tensor-name parts per PEFT type (the component that follows the adapted module's name in a saved key).
TENSOR_PARTS = {
    "LORA": {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"},
    "ADALORA": {"lora_A", "lora_B", "lora_E"},
    "LOHA": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"},
    "LOKR": {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"},
    "IA3": {"ia3_l"},
}


PEFT_PREFIXES = ("base_model.model.", "base_model.")


class InvalidAdapterError(Exception):
    """The adapter folder cannot be served; str(error) says why, for a human."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class AdapterFolderMissing(InvalidAdapterError):
    """No folder at that path under the adapter root (a well-formed request for something that is not there: 404)."""


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidAdapterError(
            f"invalid adapter name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ - "
            "starting with a letter or digit ('.' cannot be used: PEFT keys adapters inside module paths)"
        )
    if hasattr(torch.nn.ModuleDict(), name):
        raise InvalidAdapterError(
            f"invalid adapter name {name!r}: it is reserved by torch/PEFT "
            "(an attribute of the modules that hold adapters); choose another name"
        )
    return name


_DICT_PARTS = {"lora_embedding_A", "lora_embedding_B"}  # ParameterDicts: "...lora_embedding_A.<name>", no suffix


def names_adapter(key: str, name: str) -> bool:
    """True when a PEFT state-dict key belongs to adapter `name`, by position, never by substring ("model" is in
    every key): "<module>.<tuner part>.<name>.<param>", or "<module>.lora_embedding_A.<name>"."""
    parts = key.split(".")
    tuner_parts = set().union(*TENSOR_PARTS.values())
    if len(parts) >= 3 and parts[-2] == name and parts[-3] in tuner_parts:
        return True
    return len(parts) >= 2 and parts[-1] == name and parts[-2] in _DICT_PARTS


def resolve_inside(root: Path, relative: str) -> Path:
    """Resolve `relative` under `root`, refusing absolute paths, '..' components, symlinks that resolve outside root
    and missing folders. Returns the resolved folder. Whatever the operating system refuses about the path (a name
    too long, a component that is a file, no permission) is an InvalidAdapterError naming it, never an OSError."""
    if not isinstance(relative, str) or not relative.strip():
        raise InvalidAdapterError("adapter path is empty")
    if "\x00" in relative:
        raise InvalidAdapterError("adapter path contains a NUL byte")
    posix, windows = PurePosixPath(relative), PureWindowsPath(relative)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or relative.startswith(("/", "\\", "~")):
        raise InvalidAdapterError(f"adapter path {_shown(relative)} must be relative to the adapter root, not absolute")
    if ".." in posix.parts or ".." in windows.parts:
        raise InvalidAdapterError(f"adapter path {_shown(relative)} must not contain '..'")
    root_path = Path(root)
    try:
        if not root_path.is_dir():
            raise InvalidAdapterError(f"adapter root {str(root_path)!r} does not exist")
        root_resolved = root_path.resolve()
        target = (root_resolved / relative).resolve()
        if not target.is_relative_to(root_resolved):
            raise InvalidAdapterError(
                f"adapter path {_shown(relative)} resolves outside the adapter root (symlink escape)"
            )
        if not target.exists():
            raise AdapterFolderMissing(f"adapter folder {_shown(relative)} does not exist under the adapter root")
        if not target.is_dir():
            raise InvalidAdapterError(f"adapter path {_shown(relative)} is not a folder")
    except (OSError, RuntimeError) as e:  # symlink loops, names too long, permissions
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        if isinstance(e, OSError) and e.errno in (errno.ENAMETOOLONG, errno.ENOENT, errno.ENOTDIR):
            raise AdapterFolderMissing(f"no adapter folder {_shown(relative)} under the adapter root: {reason}") from e
        raise InvalidAdapterError(f"adapter path {_shown(relative)} cannot be used: {reason}") from e
    return target


def _shown(relative: str, limit: int = 80) -> str:
    """The path for a message: quoted, and shortened when long (a 1000-character path helps nobody)."""
    return repr(relative if len(relative) <= limit else relative[: limit - 1] + "…")


def file_inside(root_resolved: Path, folder: Path, filename: str, relative: str) -> Path | None:
    path = folder / filename
    if not path.exists() and not path.is_symlink():
        return None
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as e:  # symlink loops
        raise InvalidAdapterError(f"{relative}/{filename} cannot be resolved: {e}") from e
    if not resolved.is_relative_to(root_resolved):
        raise InvalidAdapterError(f"{relative}/{filename} is a symlink that resolves outside the adapter root")
    if not resolved.is_file():
        raise InvalidAdapterError(f"{relative}/{filename} is not a regular file")
    return resolved


def read_config(path: Path | None, relative: str) -> dict:
    if path is None:
        raise InvalidAdapterError(f"{CONFIG_NAME} is missing in {relative!r}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InvalidAdapterError(f"{CONFIG_NAME} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidAdapterError(f"{CONFIG_NAME} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise InvalidAdapterError(f"{CONFIG_NAME} must contain a JSON object")
    return config


def folder_size(path: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for fn in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, fn)).st_size
            except OSError:
                pass
    return total
