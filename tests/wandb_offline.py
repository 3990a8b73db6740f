"""Read back what W&B wrote offline: group, job type, tags, config and summary of a run."""

import json
import struct
import time
from pathlib import Path


def wandb_records(path: Path):
    """The protobuf records of a `.wandb` file, W&B's LevelDB-style log: a 7-byte header, then
    32 KiB blocks of chunks: crc32 (4), length (2), type (1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding up to the next block
            pos += block - pos % block
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def finished_records(run_dir: Path, timeout: float = 120.0) -> list:
    """The records of the run's `.wandb` file once W&B's writer has written its last one (the
    run's `exit` record). `wandb.finish()` can return before the writer process has flushed
    the file, and the more so on a busy machine: poll until the record is there."""
    deadline = time.monotonic() + timeout
    while True:
        records = []
        try:
            (wandb_file,) = run_dir.glob("*.wandb")
            records = list(wandb_records(wandb_file))
        except Exception:  # not there yet, or a chunk half written
            pass
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{run_dir}: W&B's writer wrote no exit record in {timeout:.0f} s")
        time.sleep(0.2)


def read_wandb_run(run_dir: Path) -> dict:
    """Group, job type, tags, config and summary of one offline run directory (finished)."""
    out = {"config": {}, "summary": {}}
    for r in finished_records(run_dir):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(group=r.run.run_group, job_type=r.run.job_type, tags=list(r.run.tags))
            out["config"].update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "summary":
            out["summary"].update({"/".join(u.nested_key) or u.key: json.loads(u.value_json)
                                   for u in r.summary.update})
    return out
