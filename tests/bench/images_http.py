"""Images through the hospital paths (issue 17): multipart HTTP ingest against the CLI's ingest on the same
files, a PACS study fetched over DICOMweb, and recommendations with one image over HTTP.

    python -m tests.bench.images_http WORK_DIR [--pneumonia 600] [--batch 100] [--instances 50]
                                               [--clients 1,4] [--seconds 20]

- ingest: PneumoniaMNIST training images (28x28 PNGs) and the shared COVID-19 chest X-rays (PNG/JPEG) as
  image cases, `--batch` per request, once through `POST /v1/cases` (multipart) on a live server and once
  through `ingest_cases` (what `kbservice ingest cases` runs) into a second data directory: images/s each,
  and their ratio. Same files, same batches, same settings (synchronous ingest on both sides).
- pacs: a generated study of `--instances` 512x512 16-bit CT instances stored in a real Orthanc through
  STOW-RS, then ingested as one case by `dicomweb:STUDY_UID`: seconds, bytes fetched, peak RSS.
- recommend: `POST /v1/recommendations` with one image (multipart; the packaged SmolLM2, no treatment plan,
  a tiny random vision model as the image encoder so the image evidence path runs), closed loop at each
  client count: p50/p95 and throughput.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import resource
import statistics
import time
from pathlib import Path

import httpx
import numpy as np

from kbservice.config import ApiSettings, ImagingSettings, Settings
from kbservice.imaging.prepare import write_png
from kbservice.ingest.cases import ingest_cases
from kbservice.keys import create_key
from kbservice.services import build_services, initialise
from tests.api.conftest import seed, start_server
from tests.conftest import SHARED_DATA

COVID = SHARED_DATA / "covid_chestxray"


def _image_sets(work: Path, pneumonia: int) -> dict[str, list[tuple[str, Path]]]:
    """(label, file) per set, written once under `work`."""
    data = np.load(SHARED_DATA / "pneumoniamnist" / "pneumoniamnist.npz")
    folder = work / "pneumoniamnist"
    sets = {"pneumoniamnist": []}
    for index in range(pneumonia):
        path = folder / f"train-{index:05d}.png"
        if not path.exists():
            write_png(data["train_images"][index], path)
        sets["pneumoniamnist"].append(("pneumonia" if data["train_labels"][index][0] else "normal", path))
    with (COVID / "xray_licensed_metadata.csv").open(encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("image_png")]
    labelled = {row["image_png"]: row["finding"] or "unknown" for row in rows}  # a file listed twice: once
    sets["covid_chestxray"] = [
        (label, COVID / "images256" / name) for name, label in labelled.items() if (COVID / "images256" / name).exists()
    ]
    return sets


def _batches(files: list[tuple[str, Path]], size: int, prefix: str) -> list[list[dict]]:
    rows = [
        {"id": f"{prefix}-{n}", "findings": "chest radiograph", "diagnosis": label, "images": [path.name]}
        for n, (label, path) in enumerate(files)
    ]
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def _ready(data_dir: Path, vit: Path) -> Settings:
    """An initialised data directory whose image encoder is the tiny vision model; ingest stays synchronous."""
    imaging = ImagingSettings(encoder="huggingface", hf_model_path=vit)
    settings = Settings(data_dir=data_dir, api=ApiSettings(async_ingest_bytes=10**10), imaging=imaging)
    initialise(settings)
    return settings


def _tiny_vit(folder: Path) -> Path:
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def bench_ingest(
    work: Path, sets: dict[str, list[tuple[str, Path]]], batch: int, *, url: str, key: str, vit: Path
) -> dict:
    """Each set through the live server at `url` and through `ingest_cases` into a second data directory."""
    cli_services = build_services(_ready(work / "cli-data", vit))
    seed(cli_services)
    results: dict = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as client:
        for name, files in sets.items():
            by_name = {path.name: path for _, path in files}
            http_s = cli_s = 0.0
            for number, rows in enumerate(_batches(files, batch, name)):
                lines = "".join(json.dumps(r) + "\n" for r in rows).encode()
                parts = [("cases", ("cases.jsonl", lines, "application/x-ndjson"))]
                parts += [("images", (r["images"][0], by_name[r["images"][0]].read_bytes())) for r in rows]
                started = time.perf_counter()
                answer = client.post("/v1/cases", files=parts)
                http_s += time.perf_counter() - started
                assert answer.status_code == 201, answer.text
                case_file = files[0][1].parent / f"bench-{name}-{number}.jsonl"
                case_file.write_bytes(lines)
                started = time.perf_counter()
                ingest_cases(case_file, **cli_services.ingest_targets(), author="bench")
                cli_s += time.perf_counter() - started
            results[name] = {
                "images": len(files),
                "http_images_per_s": round(len(files) / http_s, 1),
                "cli_images_per_s": round(len(files) / cli_s, 1),
                "http_vs_cli": round(cli_s / http_s, 3),
            }
    cli_services.close()
    return results


def bench_pacs(work: Path, instances: int) -> dict:
    from tests.imaging.images import write_dicom
    from tests.pacs.conftest import PASSWORD, USER, orthanc_running, stow

    folder = work / "study"
    uid = "1.2.826.0.1.3680043.8.498.5050"
    paths = [
        write_dicom(
            folder / f"ct-{n:03d}.dcm",
            (np.random.default_rng(n).integers(0, 3000, (512, 512))).astype(np.uint16),
            modality="CT",
            study_uid=uid,
            extra={"InstanceNumber": n + 1},
        )
        for n in range(instances)
    ]
    with orthanc_running(work / "orthanc") as url:
        stow(url, paths)
        settings = Settings(data_dir=work / "pacs-data")
        settings.pacs.url, settings.pacs.username = url, USER
        from pydantic import SecretStr

        settings.pacs.password = SecretStr(PASSWORD)
        settings.pacs.max_instances = max(settings.pacs.max_instances, instances)
        initialise(settings)
        services = build_services(settings)
        warm_up = work / "warm-up.jsonl"  # loads the embedder, so the timing is the study's alone
        warm_up.write_text(json.dumps({"id": "warm-up", "findings": "cough", "diagnosis": "unknown"}) + "\n")
        ingest_cases(warm_up, **services.ingest_targets(), author="bench")
        case_file = work / "pacs-case.jsonl"
        row = {"id": "pacs-study", "findings": "CT chest", "diagnosis": "unknown", "images": [f"dicomweb:{uid}"]}
        case_file.write_text(json.dumps(row) + "\n")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        ingest_cases(case_file, **services.ingest_targets(), author="bench")
        seconds = time.perf_counter() - started
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        services.close()
    return {
        "instances": instances,
        "seconds": round(seconds, 2),
        "instances_per_s": round(instances / seconds, 1),
        "mb_fetched": round(sum(p.stat().st_size for p in paths) / 1e6, 1),
        "peak_rss_mb_before": round(rss_before),
        "peak_rss_mb_after": round(rss_after),
    }


async def _closed_loop(url: str, key: str, clients: int, seconds: float, image: bytes) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    request = json.dumps({"findings": "Cough, fever and crackles at the right base.", "with_treatment": False})

    async def client_loop(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            files = [("request", (None, request, "application/json")), ("images", ("cxr.png", image, "image/png"))]
            answer = await http.post("/v1/recommendations", files=files)
            if answer.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "throughput": round(len(latencies) / elapsed, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p95_ms": round(float(np.percentile(latencies, 95)) * 1000, 1) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--pneumonia", type=int, default=600)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--clients", default="1,4")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    pacs = bench_pacs(args.work, args.instances)  # first: the process's peak RSS is then the study's
    vit = _tiny_vit(args.work / "tiny-vit")
    sets = _image_sets(args.work, args.pneumonia)
    services = build_services(_ready(args.work / "http-data", vit))
    seed(services)
    key = create_key(services, name="bench", role="admin", actor="bench")[1]
    server, thread, url = start_server(services)
    ingest = bench_ingest(args.work, sets, args.batch, url=url, key=key, vit=vit)
    image = sets["covid_chestxray"][0][1].read_bytes()
    asyncio.run(_closed_loop(url, key, 1, 3.0, image))  # warm-up: loads the language model
    recommend = [
        asyncio.run(_closed_loop(url, key, int(c), args.seconds, image)) for c in args.clients.split(",") if c.strip()
    ]
    server.should_exit = True  # type: ignore[attr-defined]
    thread.join(timeout=30)
    services.close()
    print(json.dumps({"ingest": ingest, "pacs": pacs, "recommend_with_one_image": recommend}, indent=1))


if __name__ == "__main__":
    main()
