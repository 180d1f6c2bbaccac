"""Evaluations on real data: retrieval, de-identification, image fusion, diagnosis (and its data split),
treatment and continual learning. Those that build a knowledge base do so in a temporary data directory."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kbservice.cli.app import (
    JsonFlag,
    ModeOption,
    check_mode,
    err,
    eval_app,
    out,
    print_json,
    print_measures,
    progress,
    state,
)
from kbservice.errors import KBError
from kbservice.services import temporary_services


@eval_app.command("retrieval")
def eval_retrieval(
    corpus: Annotated[Path, typer.Option(help="MedQuAD medquad_answered.jsonl.")] = Path(
        "../shared/data/medquad/medquad_answered.jsonl"
    ),
    sample: Annotated[int, typer.Option(help="How many questions (fixed seed).")] = 500,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 13,
    as_json: JsonFlag = False,
) -> None:
    """Recall@1, recall@10 and MRR of each mode on MedQuAD questions against the knowledge base in --data-dir
    (ingest the corpus first with `kbservice bench ingest`)."""
    from kbservice.evaluation.retrieval import evaluate_medquad

    result = evaluate_medquad(state.services, corpus=corpus, sample=sample, seed=seed, console=err)
    if as_json:
        print_json(result)


@eval_app.command("deid")
def eval_deid(
    notes: Annotated[Path, typer.Option(help="MTSamples notes CSV.")] = Path("../shared/data/mtsamples/mtsamples.csv"),
    drugs: Annotated[Path, typer.Option(help="WHO essential medicines CSV (clinical terms that must survive).")] = Path(
        "../shared/data/who_eml_gnuhealth/who_eml_2017_gnuhealth.csv"
    ),
    count: Annotated[int, typer.Option("--notes-count", help="How many notes to seed.")] = 200,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 11,
    as_json: JsonFlag = False,
) -> None:
    """De-identification recall on real notes seeded with synthetic identifiers, and clinical-term preservation."""
    from kbservice.evaluation.deid import evaluate_deid

    result = evaluate_deid(notes_csv=notes, drugs_csv=drugs, notes=count, seed=seed)
    if as_json:
        print_json(result)
        return
    out.print(
        f"{result['seeded_identifiers']} seeded identifiers in {result['notes']} notes: recall {result['recall']}"
    )
    out.print(f"clinical terms preserved: {result['clinical_preserved']} of {result['clinical_terms']}")
    for kind, recall in result["recall_by_type"].items():
        out.print(f"  {kind:<11} {recall}")


@eval_app.command("image-fusion")
def eval_image_fusion(
    data: Annotated[Path, typer.Option("--data", help="The covid_chestxray folder (metadata CSV + images256/).")],
    test_fraction: Annotated[float, typer.Option("--test-fraction", min=0.1, max=0.5)] = 0.3,
    seed: Annotated[int, typer.Option("--seed", help="The (first) split's seed.")] = 0,
    seeds: Annotated[
        int,
        typer.Option(
            "--seeds",
            min=1,
            help="Repeat over this many patient-level splits (seed, seed+1, ...) and report mean, spread and "
            "paired differences with bootstrap 95% intervals. 1: one split, reported in full.",
        ),
    ] = 1,
    text: Annotated[
        str,
        typer.Option(
            "--text",
            help="notes: the clinical note plus measurements; vitals: temperature, pO2, leukocytes, "
            "lymphocytes, view, age and sex only (triage before a report exists).",
        ),
    ] = "notes",
    features_out: Annotated[
        Path | None,
        typer.Option(
            "--features-out",
            help="Also write every case's features (pickle), for analysis; with --seeds, a folder of one file per "
            "split.",
        ),
    ] = None,
    unlabelled: Annotated[
        list[str] | None,
        typer.Option(
            "--unlabelled",
            help="Also store chest films without a diagnosis as unlabelled image cases, for the encoder's "
            "self-supervised pre-training (set KB_IMAGING__CNN_PRETRAIN_EPOCHS): 'todo' (this set's X-rays "
            "with no finding) or a MedMNIST .npz file (its train_images). Repeatable.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Text alone, image alone and text + image on COVID-19 chest X-rays (three classes, patient-level
    split): the update cycle trains the encoder and the adapter with its image projector on the training
    patients; each condition's fusion is fitted on the cycle's held-out cases; macro-F1 and accuracy on the
    test patients, and `recommend` latency with an image."""
    from kbservice.evaluation.image_fusion import TEXT_SETTINGS, fresh_fusion_benchmark
    from kbservice.evaluation.unlabelled_images import check_sources

    if text not in TEXT_SETTINGS:
        raise typer.BadParameter(f"choose one of {', '.join(TEXT_SETTINGS)}", param_hint="--text")
    try:
        check_sources(unlabelled or ())
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--unlabelled") from None
    if seeds > 1:
        if features_out is not None:
            features_out.mkdir(parents=True, exist_ok=True)
        from kbservice.evaluation.image_fusion_splits import repeated_fusion_benchmark

        summary = repeated_fusion_benchmark(
            state.settings,
            data,
            seeds=seeds,
            first_seed=seed,
            text=text,
            test_fraction=test_fraction,
            progress=progress(),
            features_dir=features_out,
            unlabelled=unlabelled or (),
        )
        _print_repeated_fusion(summary, as_json=as_json)
        return
    result = fresh_fusion_benchmark(
        state.settings,
        data,
        test_fraction=test_fraction,
        seed=seed,
        text=text,
        progress=progress(),
        features_out=features_out,
        unlabelled=unlabelled or (),
    )
    if as_json:
        print_json(result)
        return
    table = Table("condition", "accuracy", "macro-F1", "ECE")
    for condition, metrics in result["conditions"].items():
        table.add_row(condition, f"{metrics['accuracy']:.4f}", f"{metrics['macro_f1']:.4f}", f"{metrics['ece']:.4f}")
    out.print(table)
    print_measures({k: v for k, v in result.items() if k not in ("conditions", "test_answers")})


def _print_repeated_fusion(summary: dict, *, as_json: bool) -> None:
    if as_json or "error" in summary:
        print_json(summary)
        if "error" in summary:
            raise typer.Exit(1)
        return
    table = Table("condition", "accuracy", "macro-F1", title=f"{len(summary['seeds'])} splits, text: {summary['text']}")
    for condition, row in summary["conditions"].items():
        table.add_row(
            condition,
            f"{row['accuracy_mean']:.4f} ± {row['accuracy_sd']:.4f}",
            f"{row['macro_f1_mean']:.4f} ± {row['macro_f1_sd']:.4f}",
        )
    out.print(table)
    paired = Table("text+image minus", "accuracy [95% CI]", "macro-F1 [95% CI]", title="paired, bootstrap")
    for single, metrics in summary["fused_minus"].items():
        paired.add_row(
            single,
            *(
                f"{m['difference']:+.4f} [{m['ci95_low']:+.4f}, {m['ci95_high']:+.4f}]"
                for m in (metrics["accuracy"], metrics["macro_f1"])
            ),
        )
    out.print(paired)
    for condition, recalls in summary["per_class_recall"].items():
        out.print(f"recall, {condition}: " + ", ".join(f"{label} {value:.3f}" for label, value in recalls.items()))


DATASETS = ("symptom2disease", "ddxplus")


@eval_app.command("diagnosis")
def eval_diagnosis(
    cases_file: Annotated[Path | None, typer.Option("--cases", help="Test cases (.jsonl/.csv in case format).")] = None,
    train: Annotated[
        Path | None, typer.Option("--train", help="Training cases: build a fresh knowledge base from them (temporary).")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            help="A named data set instead of --cases/--train: symptom2disease (stratified split) or ddxplus "
            "(split by patient, with gold differentials), read from --data.",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="The data set's folder (default: ../shared/data/<dataset>)."),
    ] = None,
    test_share: Annotated[
        float, typer.Option("--test-share", min=0.05, max=0.95, help="Named data sets: test share.")
    ] = 0.3,
    seed: Annotated[int, typer.Option("--seed", help="Named data sets: the split's seed.")] = 0,
    test_sample: Annotated[
        int | None,
        typer.Option("--test-sample", min=1, help="Score only this many test cases (a seeded sample; baselines too)."),
    ] = None,
    mode: ModeOption = "rag",
    as_json: JsonFlag = False,
) -> None:
    """Accuracy, macro-F1, per-class recall, ECE, top-5 recall, risk-coverage and latency of kbservice's
    diagnosis beside baselines fitted on the same training cases (always the commonest class, TF-IDF +
    logistic regression, embedding + logistic regression, k-nearest-neighbour vote), and whether kbservice
    beats them. With --train (or --dataset) the training cases go into a fresh temporary store, the case
    classifier is trained there by the update cycle's classifier stage, and the fusion is calibrated on
    held-out training cases; else the current store is evaluated as it serves."""
    from kbservice.evaluation.diagnosis import evaluate_diagnosis
    from kbservice.ingest.cases import ingest_cases

    mode = check_mode(mode)
    with tempfile.TemporaryDirectory(prefix="kbservice-eval-") as work:
        gold = None
        if dataset is not None:
            if cases_file is not None or train is not None:
                raise typer.BadParameter("give either --dataset or --cases/--train", param_hint="--dataset")
            cases_file, train, gold = _named_split(dataset, data, Path(work), test_share=test_share, seed=seed)
        if cases_file is None:
            raise typer.BadParameter("give --cases (with or without --train) or --dataset", param_hint="--cases")
        if not cases_file.exists():
            raise KBError(f"{cases_file} does not exist")
        if test_sample is not None:
            cases_file = _sample_lines(cases_file, Path(work) / "test_sample.jsonl", count=test_sample, seed=seed)
        if train is None:
            result = evaluate_diagnosis(
                state.services,
                cases_file,
                mode=mode,
                calibrate_first=False,
                gold_differentials=gold,
                progress=progress(),
            )  # type: ignore[arg-type]
        else:
            with temporary_services(state.settings) as (services, _):
                ingest_cases(train, **services.ingest_targets(), author="eval", progress=progress())
                result = evaluate_diagnosis(
                    services,
                    cases_file,
                    mode=mode,  # type: ignore[arg-type]
                    calibrate_first=True,
                    train_file=train,
                    gold_differentials=gold,
                    progress=progress(),
                )
    if dataset is not None:
        result = {"dataset": dataset, "seed": seed, "test_share": test_share} | result
    if as_json:
        print_json(result)
        return
    _print_diagnosis(result)


def _named_split(
    dataset: str, data: Path | None, work: Path, *, test_share: float, seed: int
) -> tuple[Path, Path, dict | None]:
    """(test file, train file, gold differentials or None) of a named data set, written under `work`."""
    import json

    if dataset not in DATASETS:
        raise typer.BadParameter(f"choose one of {', '.join(DATASETS)}", param_hint="--dataset")
    folder = data or Path("../shared/data") / dataset
    if dataset == "ddxplus":
        from kbservice.evaluation.ddxplus import write_ddxplus_split

        write_ddxplus_split(folder, out_dir=work, test_share=test_share, seed=seed)
        gold = json.loads((work / "test_differentials.json").read_text(encoding="utf-8"))
        return work / "test.jsonl", work / "train.jsonl", gold
    from kbservice.evaluation.splits import split_labelled_csv

    split_labelled_csv(
        folder / "symptom2disease.csv",
        out_dir=work,
        label_column="label",
        text_column="text",
        id_column=None,
        test_share=test_share,
        seed=seed,
    )
    return work / "test.jsonl", work / "train.jsonl", None


def _sample_lines(path: Path, out: Path, *, count: int, seed: int) -> Path:
    """A seeded sample of `count` rows of a JSONL case file (all of them when it has fewer)."""
    import random

    if path.suffix != ".jsonl":
        raise typer.BadParameter("--test-sample needs a .jsonl test file", param_hint="--test-sample")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    chosen = sorted(random.Random(seed).sample(range(len(lines)), min(count, len(lines))))
    out.write_text("\n".join(lines[i] for i in chosen) + "\n", encoding="utf-8")
    return out


def _print_diagnosis(result: dict) -> None:
    columns = ("accuracy", "macro_f1", "ece", "top5_recall", "gold_mass_in_top5")
    table = Table("", "accuracy", "macro-F1", "ECE", "top-5 recall", "gold mass in top 5")
    rows = [("kbservice", result)]
    rows += [(f"  {name}", metrics) for name, metrics in result.get("ablation", {}).items() if name != "fused"]
    rows += [(f"baseline: {name}", metrics) for name, metrics in result["baselines"].items()]
    for name, metrics in rows:
        table.add_row(name, *(f"{metrics[c]:.4f}" if metrics.get(c) is not None else "-" for c in columns))
    out.print(table)
    coverage = ", ".join(f"{k.removeprefix('accuracy_at_')}: {v:.4f}" for k, v in result["risk_coverage"].items())
    out.print(f"kbservice accuracy by coverage: {coverage}")
    out.print(f"abstained on {result['abstention_rate']:.1%}; latency p50 {result['latency_s']['p50']:.3f} s")
    out.print(result["verdict"]["text"])


@eval_app.command("split")
def eval_split(
    path: Annotated[
        Path, typer.Argument(help="A labelled CSV, e.g. ../shared/data/symptom2disease/symptom2disease.csv")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for train.jsonl and test.jsonl.")],
    label_column: Annotated[str, typer.Option(help="Column with the label.")] = "label",
    text_column: Annotated[str, typer.Option(help="Column with the findings text.")] = "text",
    id_column: Annotated[
        str | None, typer.Option(help="Column with unique case ids (default: number the rows).")
    ] = None,
    test_share: Annotated[float, typer.Option(min=0.05, max=0.95, help="Share of each label held out.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Shuffle seed.")] = 0,
) -> None:
    """Write a stratified train/test split of a labelled CSV as case files for `eval diagnosis`."""
    from kbservice.evaluation.splits import split_labelled_csv

    result = split_labelled_csv(
        path,
        out_dir=out_dir,
        label_column=label_column,
        text_column=text_column,
        id_column=id_column,
        test_share=test_share,
        seed=seed,
    )
    out.print(
        f"train: {result['train']} cases -> {out_dir / 'train.jsonl'}; "
        f"test: {result['test']} cases -> {out_dir / 'test.jsonl'}"
    )


@eval_app.command("treatment")
def eval_treatment(
    indications: Annotated[Path, typer.Option(help="PharmacotherapyDB indications.tsv.")] = Path(
        "../shared/data/pharmacotherapydb/indications.tsv"
    ),
    limit: Annotated[int | None, typer.Option(help="Only the first N diseases (alphabetical).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """How often the treatment plan names a disease-modifying drug, with PharmacotherapyDB indications
    ingested as the only knowledge (a fresh temporary store; the configured language model)."""
    from kbservice.evaluation.treatment import evaluate_treatment

    with temporary_services(state.settings) as (services, workdir):
        result = evaluate_treatment(services, indications, workdir=workdir, limit=limit, progress=progress())
    if as_json:
        print_json(result)
        return
    out.print(
        f"{result['diseases_with_dm_drugs']} diseases with disease-modifying drugs: plan names one in "
        f"{result['plans_naming_a_dm_drug']:.1%}, names a not-indicated drug in "
        f"{result['plans_naming_a_not_indicated_drug']:.1%}; {result['mean_plan_seconds']} s per plan"
    )


@eval_app.command("continual")
def eval_continual(
    cases_file: Annotated[Path, typer.Option("--cases", help="Training cases (case format) that arrive in batches.")],
    test_file: Annotated[
        Path, typer.Option("--test", help="Test cases (case format), e.g. from `kbservice eval split`.")
    ],
    batches: Annotated[int, typer.Option("--batches", help="How many batches (disease groups).")] = 4,
    joint: Annotated[bool, typer.Option("--joint/--no-joint", help="Also train jointly on all data at once.")] = True,
    freeze_per_batch: Annotated[
        int, typer.Option("--freeze-per-batch", help="Cases of each batch added to the frozen evaluation set.")
    ] = 12,
    as_json: JsonFlag = False,
) -> None:
    """The continual-learning benchmark on fresh temporary stores: per batch, accuracy and macro-F1 on the test
    cases of every disease seen so far (base model + RAG, champion + RAG), backward transfer, joint reference."""
    from kbservice.evaluation.continual import run_continual
    from kbservice.ingest.case_files import parse_case_file

    for f in (cases_file, test_file):
        if not f.exists():
            raise KBError(f"{f} does not exist")
    limit = state.settings.ingest.max_case_field_chars
    train = parse_case_file(cases_file, labeled_by=None, max_chars=limit)
    test = parse_case_file(test_file, labeled_by=None, max_chars=limit)
    result = run_continual(
        state.settings,
        train,
        test,
        batches=batches,
        joint=joint,
        freeze_per_batch=freeze_per_batch,
        progress=progress(),
    )
    if as_json:
        print_json(result)
        return
    table = Table(
        "batch", "diseases seen", "test cases", "update", "base acc", "base F1", "champion acc", "champion F1"
    )
    for row in result["batches"]:
        table.add_row(
            str(row["batch"]),
            str(sum(len(g) for g in result["groups"][: row["batch"]])),
            str(row["test_cases"]),
            f"{row['update']['status']} {row['update']['adapter_version'] or ''}",
            f"{row['base_rag']['accuracy']:.4f}",
            f"{row['base_rag']['macro_f1']:.4f}",
            f"{row['champion_rag']['accuracy']:.4f}",
            f"{row['champion_rag']['macro_f1']:.4f}",
        )
    out.print(table)
    out.print(f"backward transfer: {result['backward_transfer']}")
    if "joint" in result:
        j = result["joint"]["champion_rag"]
        out.print(f"joint training: accuracy {j['accuracy']:.4f}, macro-F1 {j['macro_f1']:.4f}")
