"""Where a recommendation's time goes: cProfile over diagnosis requests against an existing data dir.

    python tests/bench/profile_recommend.py DATA_DIR CASES.jsonl [--count N] [--top N] [--treatment]

Each case's findings become a request (its label left out); one untimed warm-up, then `--count` requests
under cProfile. Prints the per-request p50 and the functions with the most cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time
from pathlib import Path

from kbservice.config import Settings
from kbservice.ingest.case_files import parse_case_file
from kbservice.recommend.answer import recommend
from kbservice.recommend.request import request_for_case
from kbservice.services import build_services


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("cases", type=Path)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--treatment", action="store_true", help="Also plan treatment (off: diagnosis only).")
    args = parser.parse_args()
    services = build_services(Settings(data_dir=args.data_dir))
    limit = services.settings.ingest.max_case_field_chars
    cases = parse_case_file(args.cases, labeled_by=None, max_chars=limit)[: args.count + 1]
    requests = [request_for_case(case, mode="rag") for case in cases]
    recommend(services, requests[0], actor="profile", with_treatment=args.treatment)  # loads models, untimed
    seconds = []
    profiler = cProfile.Profile()
    for request in requests[1:]:
        started = time.perf_counter()
        profiler.enable()
        recommend(services, request, actor="profile", with_treatment=args.treatment)
        profiler.disable()
        seconds.append(time.perf_counter() - started)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.top)
    print(f"{len(seconds)} requests, p50 {statistics.median(seconds):.3f} s, mean {statistics.mean(seconds):.3f} s")
    print(out.getvalue())


if __name__ == "__main__":
    main()
