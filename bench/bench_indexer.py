"""The indexer's CPU per span, the current tree against another copy of mocks/tracing, in one run.

    python bench/bench_indexer.py --baseline /tmp/old/mocks/tracing [--batches 200] [--rounds 3]
                                  [--profile DIR]

The same pre-encoded OTLP protobuf batches (bench_ingest's: 512 spans over 4 services, each batch
its own trace ids) are appended to a WAL once; then, in a fresh child process per (tree, round),
pinned to one core, the indexer's own loop (:func:`indexer._read_batch` -> ``insert_rows`` -> the
RPC deriver's observe/settle, as :func:`indexer.run` does with metrics listening) indexes the whole
WAL into an empty SQLite file. Printed: CPU µs per span (process time of the loop / spans) for each
tree and round, and the ratio baseline / current. ``--baseline`` is a directory holding another
``mocks/tracing`` (e.g. ``git archive HEAD mocks/tracing | tar -x -C /tmp/old``): the child imports
``devbox.mocks.tracing``'s submodules from there. ``--profile DIR`` records py-spy (raw collapsed
stacks) of each tree's first round and prints the top frames.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CHILD = r"""
import json, sys, time
from pathlib import Path
tree, wal_dir, db = sys.argv[1], sys.argv[2], sys.argv[3]
import devbox.mocks.tracing as pkg
if tree != "-":
    pkg.__path__ = [tree]
from devbox.mocks.tracing import fastpath, indexer, rpcstats  # noqa: F401 (imported before the clock starts)
from devbox.mocks.tracing.store import SpanStore
from devbox.mocks.tracing.wal import Position
keys = ["http.route", "http.request.method", "http.response.status_code", "rpc.method"]
store = SpanStore(Path(db), indexed_keys=keys)
deriver = rpcstats.RpcDeriver([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
position, spans = Position(0, 0), 0
step = getattr(indexer, "index_batch", None)  # the indexer loop's step, where the tree has one
if step is not None:
    import gc
    gc.freeze()
started = time.process_time()
while True:
    calls, own = [], set()
    if step is not None:
        _, end = step(store, Path(wal_dir), position, 20_000, False, calls, own)
        if end == position:
            break
        n = store.count - spans
    else:
        batch, _, end = indexer._read_batch(Path(wal_dir), position, 20_000, store.indexed_keys, False, calls, own)
        if end == position:
            break
        store.insert_rows(batch, wal_position=end)
        n = len(batch.rows)
    deriver.observe(calls, time.time())
    deriver.settle(time.time())
    spans += n
    position = end
cpu = time.process_time() - started
store.close()
print(json.dumps({"spans": spans, "cpu_s": cpu, "stored": store.count}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="a directory holding the baseline's tracing modules")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", type=Path, default=None)
    args = ap.parse_args()

    import bench_ingest

    bodies = bench_ingest.batches(args.batches)
    with tempfile.TemporaryDirectory(prefix="bench-indexer-") as tmp_name:  # ~0.5 GB of WAL and databases
        compare(args, bodies, Path(tmp_name))


def compare(args: argparse.Namespace, bodies: list[bytes], tmp: Path) -> None:
    """Append ``bodies`` to a WAL under ``tmp``, index it with each tree in turn, print the figures."""
    import bench_ingest
    from devbox.mocks.tracing import wal

    writer = wal.WalWriter(tmp / "wal")
    now_us = time.time_ns() // 1000
    for body in bodies:
        writer.append(wal.OTLP_PROTOBUF, body, now_us=now_us, max_future_us=3_600_000_000, accepted=512)
    writer.close()
    trees = {"baseline": str(Path(args.baseline).resolve()), "current": "-"}
    results: dict[str, list[float]] = {name: [] for name in trees}
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(reversed(trees))
        for name in order:
            db = tmp / f"{name}-{r}.db"
            cmd = [sys.executable, "-c", CHILD, trees[name], str(tmp / "wal"), str(db)]
            out_file = None
            if args.profile is not None and r == 0:
                args.profile.mkdir(parents=True, exist_ok=True)
                out_file = args.profile / f"{name}.txt"
                cmd = ["py-spy", "record", "--rate", "250", "--format", "raw", "--output", str(out_file), "--", *cmd]
            cmd = ["taskset", "-c", str(r % (os.cpu_count() or 1)), *cmd]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            got = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
            us = got["cpu_s"] / got["spans"] * 1e6
            results[name].append(us)
            print(f"round {r} {name:8s}: {got['spans']} spans ({got['stored']} stored), "
                  f"{got['cpu_s']:.2f} s CPU, {us:.1f} us/span", flush=True)
            if out_file is not None:
                print("\n".join(bench_ingest.top_frames(out_file)), flush=True)
    base, cur = statistics.median(results["baseline"]), statistics.median(results["current"])
    print(f"median us/span: baseline {base:.1f}, current {cur:.1f}: {base / cur:.2f}x less CPU per span")
    for r, (b, c) in enumerate(zip(results["baseline"], results["current"], strict=True)):
        print(f"  round {r}: {b / c:.2f}x")


if __name__ == "__main__":
    main()
