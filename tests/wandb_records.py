"""Read an offline W&B run's ``.wandb`` file back into W&B's own protobuf records (``wandb_internal_pb2.Record``).

The file is W&B's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then LevelDB-log framing
(32 KiB blocks; each chunk has a 4-byte checksum, 2-byte length and 1-byte type: full, first, middle or last).
W&B 0.31 ships no Python reader for it, so this frames the bytes and lets W&B's protobuf classes parse them.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    ident, magic, version = HEADER.unpack_from(data)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a W&B transaction log"
    out, pending, offset = [], b"", HEADER.size
    while offset + CHUNK.size <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < CHUNK.size:  # padding at a block's end
            offset += left_in_block
            continue
        _, length, kind = CHUNK.unpack_from(data, offset)
        body = data[offset + CHUNK.size : offset + CHUNK.size + length]
        offset += CHUNK.size + length
        if kind == 0 and length == 0:
            break
        pending = body if kind in (FULL, FIRST) else pending + body
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def run_summary(run_dir: Path) -> dict:
    """What one offline run holds: its run record's fields, config keys, the history keys logged, and its alerts
    (title, level)."""
    (log_file,) = Path(run_dir).glob("*.wandb")
    found = {"history_keys": set(), "config_keys": set(), "steps": 0}
    for record in records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            found.update(run_id=record.run.run_id, name=record.run.display_name, group=record.run.run_group,
                         job_type=record.run.job_type, tags=list(record.run.tags))  # fmt: skip
            found["config_keys"] |= {item.key for item in record.run.config.update}
        elif kind == "config":
            found["config_keys"] |= {item.key for item in record.config.update}
        elif kind == "history":
            found["steps"] += 1
            found["history_keys"] |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        elif kind == "summary":
            for item in record.summary.update:
                found.setdefault("summary", {})[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "alert":
            found.setdefault("alerts", []).append((record.alert.title, record.alert.level))
        elif kind == "exit":
            found["exit_code"] = record.exit.exit_code
    return found
