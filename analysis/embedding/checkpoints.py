"""Load any checkpoint NegScope understands into an :class:`~analysis.embedding.encoders.Encoder`.

Kinds, detected from the path:

============================  ==================================================================  ===========
kind                          what the path is                                                    modalities
============================  ==================================================================  ===========
``negscope-dual-encoder``     folder with ``config.json`` (``"model_type": "negscope-dual-encoder"``) text, image
                              + ``model.safetensors``; or a state dict ``.pt``/``.pth``/``.bin``/
                              ``.ckpt`` with that ``config.json`` beside it
``sentence-transformers``     folder with ``modules.json`` or ``config_sentence_transformers.json`` text
``hf-clip``                   Hugging Face CLIP / SigLIP folder (``config.json`` ``model_type``     text, image
                              clip, siglip, siglip2, chinese_clip), via ``transformers``
``precomputed``               ``.npy`` / ``.npz`` / ``.parquet`` embeddings aligned to the items  (given)
============================  ==================================================================  ===========

Safety: nothing is ever unpickled. Pickle-based files are opened only with
``torch.load(path, weights_only=True)``; anything that needs more is refused with a ``CheckpointError``.
``.npy`` / ``.npz`` are read with ``allow_pickle=False``; Hugging Face folders with ``trust_remote_code=False``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from analysis.embedding.encoders import (
    Encoder,
    one_line,
    pickle_refusal_reason,
    read_json,
    resolve_device,
    resolve_precision,
)
from analysis.embedding.encoders_hf import HF_DUAL_MODEL_TYPES, ST_MARKERS, hf_model_type
from analysis.errors import CheckpointError

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
PRECOMPUTED_SUFFIXES = (".npy", ".npz", ".parquet")
KINDS = ("negscope-dual-encoder", "sentence-transformers", "hf-clip", "precomputed")
DUAL_ENCODER_TYPE = "negscope-dual-encoder"
_FOLDER_FILE_NAMES = ("config.json", "model.safetensors", "modules.json", "config_sentence_transformers.json")
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
_SUPPORTED = (
    "a NegScope dual-encoder folder (config.json + model.safetensors), a sentence-transformers folder "
    "(modules.json), a Hugging Face CLIP/SigLIP folder, precomputed embeddings (.npy/.npz/.parquet) or a "
    "state dict (.pt/.pth/.bin/.ckpt) with a NegScope config.json beside it"
)

_file_hashes: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`inspect_checkpoint` finds without loading any weights.

    Attributes
    ----------
    path : Path
        The checkpoint folder or file (absolute).
    kind : str
        One of :data:`KINDS`.
    source : str
        How it is stored: ``"folder"``, ``"state-dict"`` (a pickle read with ``weights_only=True``) or
        ``"file"`` (precomputed embeddings).
    files : tuple of Path
        The files whose bytes make up :attr:`content_hash`.
    content_hash : str
        sha256 over the files' relative names and bytes.
    """

    path: Path
    kind: str
    source: str
    files: tuple[Path, ...]
    content_hash: str


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (memoised on path, size and modification time)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    digest = _file_hashes.get(key)
    if digest is None:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
        _file_hashes[key] = digest
    return digest


def checkpoint_hash(files: list[Path] | tuple[Path, ...], *, root: Path) -> str:
    """sha256 over the files' names (relative to ``root``) and bytes, in sorted name order.

    Parameters
    ----------
    files : list of Path
        The checkpoint's files.
    root : Path
        Folder the names are taken relative to (so moving the checkpoint keeps its hash).

    Returns
    -------
    str
        64 hex characters.
    """
    h = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(file_sha256(path).encode())
        h.update(b"\n")
    return h.hexdigest()


def _folder_files(folder: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for name in filenames:
            path = Path(dirpath) / name
            if not name.startswith(".") and path.is_file():
                files.append(path)
    return files


def _allowed_roots(folder: Path) -> list[Path]:
    """Where a checkpoint folder's files may lie: the folder, and for a Hugging Face cache snapshot
    (``models--org--name/snapshots/REV``) the cache's ``blobs/`` folder its files link to."""
    roots = [folder.resolve()]
    if folder.parent.name == "snapshots" and (folder.parent.parent / "blobs").is_dir():
        roots.append((folder.parent.parent / "blobs").resolve())
    return roots


def _confine(path: Path, folder: Path, roots: list[Path], *, what: str) -> None:
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{folder}: {what} {str(path)[:200]} cannot be resolved ({exc})") from None
    if not any(resolved.is_relative_to(root) for root in roots):
        raise CheckpointError(
            f"{folder}: {what} {str(path)[:200]} leads outside the checkpoint folder (through '..', an absolute "
            "path or a symbolic link); it is refused"
        )


def check_folder_files(folder: Path, files: list[Path]) -> None:
    """Check that every file a checkpoint folder holds or names stays inside it, before any is read.

    Checked: every file in the folder (a symbolic link is followed and must land inside the folder, or in the
    ``blobs/`` folder of a Hugging Face cache snapshot); the weight shards named by ``*.index.json``
    (``weight_map``); the module folders named by a sentence-transformers ``modules.json``.

    Raises
    ------
    CheckpointError
        Naming the file or entry that leads outside the folder, or a malformed index.
    """
    roots = _allowed_roots(folder)
    for file in files:
        _confine(file, folder, roots, what="the file")
    for index in sorted(folder.glob("*.index.json")):
        data = read_json(index)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) and v for v in weight_map.values()):
            raise CheckpointError(f"{index}: expected a JSON object with a 'weight_map' of tensor name -> shard file")
        for shard in sorted(set(weight_map.values())):
            if "\0" in shard:
                raise CheckpointError(f"{index}: a shard name holds a NUL character")
            _confine(folder / shard, folder, roots, what=f"the shard named in {index.name}:")
    modules = folder / "modules.json"
    if modules.is_file():
        data = read_json(modules)
        entries = data if isinstance(data, list) else []
        for entry in entries:
            sub = entry.get("path") if isinstance(entry, dict) else None
            if isinstance(sub, str) and sub:
                if "\0" in sub:
                    raise CheckpointError(f"{modules}: a module path holds a NUL character")
                _confine(folder / sub, folder, roots, what="the module folder named in modules.json:")


def _detect_folder(folder: Path) -> str:
    model_type = hf_model_type(folder)
    if model_type == DUAL_ENCODER_TYPE:
        return "negscope-dual-encoder"
    if any((folder / marker).is_file() for marker in ST_MARKERS):
        return "sentence-transformers"
    if model_type in HF_DUAL_MODEL_TYPES:
        return "hf-clip"
    if model_type is not None:
        raise CheckpointError(
            f"{folder}: config.json declares model_type {model_type!r}, which NegScope cannot run; use {_SUPPORTED}"
        )
    raise CheckpointError(f"{folder} is not a checkpoint NegScope can read; use {_SUPPORTED}")


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Find a checkpoint's kind and content hash without loading weights (cheap, safe).

    Parameters
    ----------
    path : str or Path
        A checkpoint folder, a file inside one (``config.json``, ``model.safetensors``), a state dict or a
        precomputed embeddings file.

    Returns
    -------
    CheckpointInfo

    Raises
    ------
    CheckpointError
        When the path is missing or is no kind of checkpoint NegScope reads.
    """
    path = Path(path).expanduser()
    try:
        if not path.exists():
            raise CheckpointError(f"checkpoint {path} does not exist")
        return _inspect(path.resolve())
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {one_line(exc)}") from exc


def _inspect(path: Path) -> CheckpointInfo:
    if path.is_file() and (path.name in _FOLDER_FILE_NAMES or path.suffix.lower() == ".safetensors"):
        path = path.parent
    if path.is_dir():
        kind = _detect_folder(path)
        files = _folder_files(path)
        check_folder_files(path, files)
        return CheckpointInfo(path, kind, "folder", tuple(files), checkpoint_hash(files, root=path))
    suffix = path.suffix.lower()
    if suffix in PRECOMPUTED_SUFFIXES:
        return CheckpointInfo(path, "precomputed", "file", (path,), checkpoint_hash([path], root=path.parent))
    if suffix in PICKLE_SUFFIXES:
        files = [path]
        config = path.parent / "config.json"
        if config.is_file():
            files.append(config)
        return CheckpointInfo(
            path, DUAL_ENCODER_TYPE, "state-dict", tuple(files), checkpoint_hash(files, root=path.parent)
        )
    raise CheckpointError(f"{path}: unsupported checkpoint file type {suffix or '(none)'!r}; use {_SUPPORTED}")


def load_checkpoint(path: str | Path, *, device: str | torch.device = "auto", precision: str = "auto") -> Encoder:
    """Load a checkpoint of any supported kind into an :class:`~analysis.embedding.encoders.Encoder`.

    Parameters
    ----------
    path : str or Path
        See :func:`inspect_checkpoint`.
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU) or a device string.
    precision : {"auto", "fp32", "fp16", "bf16"}
        ``"auto"``: fp16/bf16 autocast on CUDA, fp32 elsewhere.

    Returns
    -------
    Encoder
        With ``kind``, ``modalities``, ``logit_scale``, ``device``, ``dtype``, ``content_hash``,
        ``encode_texts(texts) -> (B, D)`` and ``encode_images(images) -> (B, D)``.

    Raises
    ------
    CheckpointError
        Missing or unreadable checkpoint, an unsafe pickle (never unpickled), a missing optional package.
    """
    return build_encoder(inspect_checkpoint(path), device=device, precision=precision)


def build_encoder(info: CheckpointInfo, *, device: str | torch.device = "auto", precision: str = "auto") -> Encoder:
    """Load the weights of a checkpoint found by :func:`inspect_checkpoint`; see :func:`load_checkpoint`."""
    if info.kind == "precomputed":
        from analysis.embedding.encoders_native import load_precomputed

        resolve_precision(precision, torch.device("cpu"))  # still reject an unknown name
        return load_precomputed(info.path, content_hash=info.content_hash)
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    if info.kind == "negscope-dual-encoder":
        from analysis.embedding.encoders_native import load_dual_encoder_folder, load_dual_encoder_state_dict

        if info.source == "folder":
            return load_dual_encoder_folder(info.path, content_hash=info.content_hash, device=dev, dtype=dtype)
        state = safe_torch_load(info.path)
        config = info.path.parent / "config.json"
        model_type = hf_model_type(info.path.parent)
        if model_type != DUAL_ENCODER_TYPE:
            found = "there is none" if not config.is_file() else f"it declares model_type {model_type!r}"
            raise CheckpointError(
                f"{info.path} holds a state dict; NegScope needs a config.json with model_type "
                f"{DUAL_ENCODER_TYPE!r} beside it ({found}); for a Hugging Face or sentence-transformers model, "
                "pass its folder instead"
            )
        return load_dual_encoder_state_dict(
            state, config, path=info.path, content_hash=info.content_hash, device=dev, dtype=dtype
        )
    if info.kind == "sentence-transformers":
        from analysis.embedding.encoders_hf import SentenceTransformerEncoder

        return SentenceTransformerEncoder(info.path, content_hash=info.content_hash, device=dev, dtype=dtype)
    if info.kind == "hf-clip":
        from analysis.embedding.encoders_hf import HFDualEncoder

        return HFDualEncoder(info.path, content_hash=info.content_hash, device=dev, dtype=dtype)
    raise CheckpointError(f"unknown checkpoint kind {info.kind!r}")


def _refusal_reason(exc: BaseException) -> str:
    reason = pickle_refusal_reason(exc)
    if reason is not None:
        return reason
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return one_line(first, limit=160)


def safe_torch_load(path: Path) -> dict[str, Tensor]:
    """Read a pickle-based state dict with ``torch.load(path, weights_only=True)``, never a full unpickle.

    Returns
    -------
    dict of str to Tensor
        The state dict (unwrapped from ``state_dict`` / ``model_state_dict`` / ``model`` when nested, with a
        ``module.`` prefix from DataParallel removed).

    Raises
    ------
    CheckpointError
        When ``weights_only`` loading refuses the file (it would run code or is not a torch file), or the
        result is not a dict of tensors. The message says it was not unpickled.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ValueError ... for refused files
        raise CheckpointError(
            f"{path} is not a safe checkpoint: torch.load(weights_only=True) refused it ({_refusal_reason(exc)}), "
            "so it was not unpickled; save the weights with safetensors or as a plain state dict of tensors"
        ) from exc
    state = obj
    if isinstance(obj, dict) and not _is_tensor_dict(obj):
        state = next((obj[k] for k in _STATE_DICT_KEYS if k in obj and _is_tensor_dict(obj[k])), None)
    if not _is_tensor_dict(state):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _is_tensor_dict(obj: object) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )
