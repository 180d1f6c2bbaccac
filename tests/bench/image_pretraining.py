"""Image alone with and without self-supervised pre-training (issue 18): the CNN encoder's own answers on
the COVID-19 test patients of `eval image-fusion`'s patient-level splits.

    python -m tests.bench.image_pretraining [--seeds 0,1,2] [--pretrain-epochs 20] [--pools train,all]
                                            [--threads 1]

Per split: the encoder trained from scratch on the training patients' images (what the update cycle trains
by default), then, for each pool, SimCLR pre-training on that pool without labels followed by the same
fine-tuning. Pools: `train` (the training patients' images: what the update cycle pre-trains on when the
knowledge base holds only them) and `all` (those plus the set's 78 unlabelled "todo" X-rays and the 2,428
PneumoniaMNIST training images at the encoder's input size: a knowledge base that also stores other chest
films). Scored by the encoder's class head (argmax) on the test patients: accuracy, macro-F1, per-class
recall. Prints one JSON line per split.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from kbservice.classification import Decision, classification_metrics
from kbservice.config import ImagingSettings
from kbservice.evaluation.image_fusion import covid_rows, patient_split
from kbservice.evaluation.unlabelled_images import todo_films
from kbservice.imaging.cnn import CnnImageEncoder
from kbservice.imaging.prepare import request_pixels
from kbservice.imaging.pretraining import pretrained_network
from kbservice.imaging.readers import model_input
from kbservice.imaging.training import train_cnn_encoder
from tests.conftest import SHARED_DATA

COVID = SHARED_DATA / "covid_chestxray"
PNEUMONIA = SHARED_DATA / "pneumoniamnist" / "pneumoniamnist.npz"


def unlabelled_images(settings: ImagingSettings) -> list[np.ndarray]:
    """The COVID-19 set's X-rays without a finding ("todo") and the PneumoniaMNIST training images."""
    small = np.load(PNEUMONIA)["train_images"]
    return [request_pixels(path, settings=settings) for path in todo_films(COVID)] + [
        model_input(image.astype(np.float32) / 255.0, settings.size) for image in small
    ]


def scored(encoder: CnnImageEncoder, images: list[np.ndarray], truth: list[str]) -> dict[str, Any]:
    probabilities = encoder.class_probabilities(images)
    decisions = [
        Decision(labels=[label], top=encoder.labels[int(np.argmax(p))], probability=float(p.max()))
        for label, p in zip(truth, probabilities, strict=True)
    ]
    metrics = classification_metrics(decisions)
    return {
        "accuracy": round(metrics["accuracy"], 4),
        "macro_f1": round(metrics["macro_f1"], 4),
        "recall": metrics["per_class_recall"],
    }


def one_split(seed: int, pools: list[str], epochs: int, extra: list[np.ndarray]) -> dict[str, Any]:
    settings = ImagingSettings()
    train, test = patient_split(covid_rows(COVID), test_fraction=0.3, seed=seed)
    labels = sorted({r["label"] for r in train}, key=str.casefold)
    images = [request_pixels(r["image"], settings=settings) for r in train]
    targets = [labels.index(r["label"]) for r in train]
    test_images, truth = [request_pixels(r["image"], settings=settings) for r in test], [r["label"] for r in test]
    result: dict[str, Any] = {"seed": seed, "train_images": len(images), "test_images": len(test)}
    started = time.perf_counter()
    encoder, _ = train_cnn_encoder(images, targets, label_names=labels, version="scratch", settings=settings)
    result["scratch"] = scored(encoder, test_images, truth) | {"seconds": round(time.perf_counter() - started)}
    pretraining = settings.model_copy(update={"cnn_pretrain_epochs": epochs, "cnn_pretrain_max_seconds": 1e6})
    for pool in pools:
        pool_images = images + (extra if pool == "all" else [])
        started = time.perf_counter()
        network, record = pretrained_network(pool_images, classes=len(labels), settings=pretraining)
        encoder, _ = train_cnn_encoder(
            images, targets, label_names=labels, version=f"ssl-{pool}", settings=settings, network=network
        )
        result[f"pretrained_{pool}"] = scored(encoder, test_images, truth) | {
            "seconds": round(time.perf_counter() - started),
            "pool_images": len(pool_images),
            "contrastive_loss": [record.history[0]["loss"], record.history[-1]["loss"]],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0", help="comma-separated split seeds (as eval image-fusion's)")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--pools", default="train,all", help="train and/or all")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if not COVID.is_dir() or not PNEUMONIA.is_file():
        raise SystemExit(f"needs {COVID} and {PNEUMONIA} (../shared/data)")
    if args.threads:
        torch.set_num_threads(args.threads)
    pools = args.pools.split(",")
    extra = unlabelled_images(ImagingSettings()) if "all" in pools else []
    for seed in (int(s) for s in args.seeds.split(",")):
        print(json.dumps(one_split(seed, pools, args.pretrain_epochs, extra)), flush=True)


if __name__ == "__main__":
    main()
