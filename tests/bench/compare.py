"""One benchmark against two commits in one run: an older commit and this checkout, interleaved.

    python tests/bench/compare.py --base-ref REF [--rounds 3] [--work DIR] [--setup ARGS]... \
        [--serve "--workers 1"] [--fresh] -- KBSERVICE-ARGS...

The older commit is checked out into a git worktree under the work folder with its own virtual environment
(`make setup` there; both are reused by a later run with the same --work, and `git worktree remove` drops
the worktree); this checkout uses its own `.venv`. Each side gets its own data directory, kept in the work
folder, so a second run with the same --work and no --setup measures the same knowledge bases again. `--setup` runs
kbservice commands once per side, on that side's code and data (e.g. building a base: `--setup "bench
ingest --limit 2051"`). Then, for each round, the measured command runs on both sides, the order
alternating between rounds so that neither side always runs on a warmer (or busier) machine:

- plain: `<side>/kbservice --data-dir <side data> KBSERVICE-ARGS` (`--fresh`: a new data directory each
  round, for benchmarks that build one);
- `--serve "SERVE-ARGS"`: the side's `kbservice serve SERVE-ARGS --port P` is started on its data directory
  and, once /readyz answers 200, the measured command runs with THIS checkout's kbservice (the same load
  generator for both servers) with `{url}` and `{key}` (an admin key created on that side) substituted.

Every command runs from this checkout's folder, so relative paths (the default `../shared/data/...`) name the
same files on both sides; each side's kbservice imports its own code (an editable install) and reads its own
config/default.toml. The measured command must print one JSON document (`--json`). Every numeric leaf of it
is reported per side as the median over rounds, with head / base. The whole report goes to
`<work>/compare.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HEAD_ROOT = Path(__file__).resolve().parents[2]
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def flatten(document: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a JSON document by its path (lists of objects keyed by position, or by their
    `clients`/`kind`/`param`/`name` field when they have one, so rows of different runs line up)."""
    leaves: dict[str, float] = {}
    if isinstance(document, bool):
        return leaves
    if isinstance(document, int | float):
        return {prefix: float(document)}
    if isinstance(document, dict):
        for key, value in document.items():
            leaves |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(document, list):
        for position, value in enumerate(document):
            label = str(position)
            if isinstance(value, dict):
                named = [f"{k}={value[k]}" for k in ("clients", "kind", "param", "name") if k in value]
                label = ",".join(named) or label
            leaves |= flatten(value, f"{prefix}[{label}]")
    return leaves


def summarise(runs: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """Per metric present on both sides: each side's median over rounds and head / base."""
    rows = []
    shared = set.intersection(*(set().union(*(r.keys() for r in side)) for side in runs.values()))
    for metric in sorted(shared):
        base = [r[metric] for r in runs["base"] if metric in r]
        head = [r[metric] for r in runs["head"] if metric in r]
        base_median, head_median = statistics.median(base), statistics.median(head)
        ratio = head_median / base_median if base_median else None
        rows.append({"metric": metric, "base": base_median, "head": head_median, "head_over_base": ratio})
    return rows


class Side:
    """One commit's code, virtual environment and data directory."""

    def __init__(self, name: str, root: Path, work: Path) -> None:
        self.name, self.root = name, root
        self.kbservice = root / ".venv" / "bin" / "kbservice"
        self.data = work / name / "data"
        self.key: str | None = None

    def run(self, args: list[str], *, data: Path | None = None, capture: bool = False) -> str:
        command = [str(self.kbservice), "--data-dir", str(data or self.data), *args]
        print(f"[{self.name}] {shlex.join(command)}", file=sys.stderr, flush=True)
        done = subprocess.run(command, cwd=HEAD_ROOT, env=ENV, check=True, text=True, stdout=subprocess.PIPE)
        return done.stdout


def prepare_base(ref: str, work: Path) -> Side:
    """A worktree of `ref` under `work` with its own virtual environment (reused when already there)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=HEAD_ROOT, check=True, text=True, capture_output=True
    ).stdout.strip()
    tree = work / f"base-{commit[:12]}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=HEAD_ROOT, check=True)
    print(f"[base] {commit[:12]}: make setup", file=sys.stderr, flush=True)
    subprocess.run(["make", "setup"], cwd=tree, env=ENV, check=True)
    return Side("base", tree, work)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_and_measure(side: Side, head: Side, serve_args: list[str], measured: list[str]) -> str:
    """Starts `side`'s server, runs the measured command from `head`'s code against it, stops the server."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (side.data.parent / "server.log").open("a")
    command = [str(side.kbservice), "--data-dir", str(side.data), "serve", *serve_args, "--port", str(port)]
    server = subprocess.Popen(command, cwd=HEAD_ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the {side.name} server exited ({server.returncode}); see {log.name}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {side.name} server was not ready within 300 s; see {log.name}")
            time.sleep(1)
        args = [a.replace("{url}", url).replace("{key}", side.key or "") for a in measured]
        return head.run(args, data=side.data.parent / "client")
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-ref", required=True, help="The older commit (any git revision).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, help="Worktree, data and report folder (default: a new temp dir).")
    parser.add_argument("--setup", action="append", default=[], help="kbservice args run once per side first.")
    parser.add_argument("--serve", help="Serve each side with these `serve` args; measure with {url} and {key}.")
    parser.add_argument("--fresh", action="store_true", help="A new data directory for every measured run.")
    parser.add_argument("measured", nargs=argparse.REMAINDER, help="-- then the kbservice args to measure.")
    options = parser.parse_args()
    measured = options.measured[1:] if options.measured[:1] == ["--"] else options.measured
    if not measured:
        parser.error("give the measured kbservice command after --")
    work = options.work or Path(tempfile.mkdtemp(prefix="kbservice-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    head = Side("head", HEAD_ROOT, work)
    sides = {"base": prepare_base(options.base_ref, work), "head": head}
    for side in sides.values():
        for setup in options.setup:
            side.run(shlex.split(setup))
        if options.serve:
            name = f"compare-{time.strftime('%Y%m%dT%H%M%S')}"  # unique: a later run may reuse the data
            created = json.loads(side.run(["keys", "create", "--role", "admin", "--name", name, "--json"]))
            side.key = created["key"]
    runs: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
    raw: dict[str, list[Any]] = {"base": [], "head": []}
    for round_number in range(options.rounds):
        order = ("base", "head") if round_number % 2 == 0 else ("head", "base")
        for name in order:
            side = sides[name]
            if options.serve:
                printed = serve_and_measure(side, head, shlex.split(options.serve), measured)
            else:
                data = work / name / f"round-{round_number}" if options.fresh else None
                printed = side.run(measured, data=data)
            document = json.loads(printed)
            raw[name].append(document)
            runs[name].append(flatten(document))
    rows = summarise(runs)
    report = {
        "base_ref": options.base_ref,
        "base_commit": sides["base"].root.name.removeprefix("base-"),
        "head": subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=HEAD_ROOT, text=True, capture_output=True
        ).stdout.strip(),
        "measured": measured,
        "serve": options.serve,
        "rounds": options.rounds,
        "summary": rows,
        "runs": raw,
    }
    (work / "compare.json").write_text(json.dumps(report, indent=2))
    width = max((len(r["metric"]) for r in rows), default=10)
    print(f"{'metric':{width}}  {'base':>12}  {'head':>12}  head/base")
    for row in rows:
        ratio = f"{row['head_over_base']:.3f}" if row["head_over_base"] is not None else "-"
        print(f"{row['metric']:{width}}  {row['base']:12.4g}  {row['head']:12.4g}  {ratio}")
    print(f"report: {work / 'compare.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
