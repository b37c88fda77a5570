"""Hostile zip archives (bytes): bombs, archives with too many members, members that lie about their size."""

from __future__ import annotations

import io
import struct
import zipfile


def _zip(members: dict[str, bytes], *, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method, compresslevel=9) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def bomb(size: int = 64 * 1024 * 1024) -> bytes:
    """One member of ``size`` zero bytes: compresses about 1000 times."""
    return _zip({"set/pairs.csv": b"\0" * size})


def many_members(count: int) -> bytes:
    """``count`` empty members (stored, so the archive stays small)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(f"set/{i}.txt", b"")
    return buf.getvalue()


def lying_size(size: int = 8 * 1024 * 1024) -> bytes:
    """A member whose headers declare 1 byte but which decompresses to ``size`` bytes of text."""
    data = bytearray(_zip({"set/pairs.csv": b"anchor,positive\n" + b"a,b\n" * (size // 4)}))
    # patch the uncompressed size in the local header (offset 22) and in the central directory entry
    struct.pack_into("<I", data, 22, 1)
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 1)
    return bytes(data)


def escaping_hf_dataset(target: str) -> bytes:
    """A saved Hugging Face dataset whose ``state.json`` names a data file outside the folder."""
    import json

    state = {
        "_data_files": [{"filename": target}],
        "_fingerprint": "0" * 16,
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    info = {"features": {"anchor": {"dtype": "string", "_type": "Value"}}}
    return _zip(
        {"hf/state.json": json.dumps(state).encode(), "hf/dataset_info.json": json.dumps(info).encode()},
    )


def odd_members() -> dict[str, bytes]:
    """Archives that are valid zips but cannot be extracted as they are (each must give a clear error)."""
    return {
        "dot-member": _zip({".": b"x"}),
        "file-then-folder": _zip({"set/a": b"x", "set/a/b.csv": b"y"}),
    }
