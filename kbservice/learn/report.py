"""`kbservice report`: one HTML page with PNG charts of the learning loop and the knowledge base.

Charts: the gate's metrics per adapter version, labelled cases per knowledge version (data growth), and
knowledge versions over time; then tables of adapters and update runs. matplotlib renders off-screen.
"""

from __future__ import annotations

import html
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kbservice.services import Services

_STATUS_COLOURS = {"promoted": "#2a9d8f", "rejected": "#e76f51", "failed": "#6c757d", "training": "#adb5bd"}


def write_report(services: Services, out_dir: Path) -> dict[str, Any]:
    """Writes index.html and its charts into `out_dir`; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    adapters = services.registry.list()
    runs = services.adapter_store.runs(limit=200)
    versions = services.store.versions()
    head = versions[-1].version if versions else None
    cases = [c for c in services.case_store.cases(as_of=head) if c.diagnosis] if head is not None else []
    charts = []

    figure, axes = plt.subplots(figsize=(7, 3.2))
    scored = [a for a in adapters if a["metrics"]]
    if scored:
        x = range(len(scored))
        for key, marker in (("macro_f1", "o"), ("accuracy", "s")):
            axes.plot(x, [a["metrics"].get(key) for a in scored], marker=marker, label=key.replace("_", "-"))
        for i, a in enumerate(scored):
            axes.axvspan(i - 0.4, i + 0.4, color=_STATUS_COLOURS.get(a["status"], "#ddd"), alpha=0.15)
        axes.set_xticks(list(x), [a["version"] for a in scored])
        axes.legend(loc="lower right")
    else:
        axes.text(0.5, 0.5, "no adapter evaluated yet", ha="center", va="center", transform=axes.transAxes)
    axes.set_title("Gate metrics per adapter version (shaded: promoted green, rejected red)")
    charts.append(_save(figure, out_dir / "adapter_metrics.png"))

    figure, axes = plt.subplots(figsize=(7, 3.2))
    added = Counter(c.version_added for c in cases)
    if versions:
        running, totals = 0, []
        for v in versions:
            running += added.get(v.version, 0)
            totals.append(running)
        axes.step([v.version for v in versions], totals, where="post")
        axes.set_xlabel("knowledge version")
    axes.set_ylabel("labelled cases")
    axes.set_title("Data growth: labelled cases valid at each knowledge version (retractions excluded)")
    charts.append(_save(figure, out_dir / "data_growth.png"))

    figure, axes = plt.subplots(figsize=(7, 3.2))
    if versions:
        axes.plot([v.created_at for v in versions], [v.version for v in versions], marker=".")
        figure.autofmt_xdate()
    axes.set_ylabel("knowledge version")
    axes.set_title("Knowledge versions over time")
    charts.append(_save(figure, out_dir / "knowledge_versions.png"))

    page = out_dir / "index.html"
    page.write_text(_page(adapters, runs, services.registry.store.aliases(), charts, head), encoding="utf-8")
    return {"html": str(page), "charts": [str(out_dir / c) for c in charts]}


def _save(figure, path: Path) -> str:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path.name


def _page(adapters, runs, aliases, charts, head) -> str:  # type: ignore[no-untyped-def]
    e = html.escape

    def metric(a: dict, key: str) -> str:
        value = (a["metrics"] or {}).get(key)
        return f"{value:.4f}" if isinstance(value, float) else "–"

    adapter_rows = "".join(
        f"<tr><td>{e(a['version'])}</td><td>{e(a['status'])}</td><td>{e(', '.join(a['aliases']))}</td>"
        f"<td>{e(a['parent'] or 'base')}</td><td>{metric(a, 'accuracy')}</td><td>{metric(a, 'macro_f1')}</td>"
        f"<td>{metric(a, 'ece')}</td><td>{e(a['created_at'] or '')}</td></tr>"
        for a in adapters
    )
    run_rows = "".join(
        f"<tr><td>{e(r['run_id'])}</td><td>{e(str(r['started_at']))}</td><td>{e(r['status'])}</td>"
        f"<td>{e(r['adapter_version'] or '')}</td><td>{e(r['reason'] or '')}</td></tr>"
        for r in runs
    )
    images = "".join(f'<figure><img src="{e(c)}" alt="{e(c)}"></figure>' for c in charts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kbservice report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.25rem .5rem;font-size:.9rem}}figure{{margin:1rem 0}}</style></head>
<body><h1>kbservice report</h1>
<p>Generated {e(datetime.now(UTC).isoformat(timespec="seconds"))}. Knowledge version {e(str(head))}.
Champion: <b>{e(aliases.get("champion") or "base model")}</b>; previous: {e(aliases.get("previous") or "–")}.</p>
{images}
<h2>Adapter versions</h2><table><tr><th>version</th><th>status</th><th>aliases</th><th>parent</th>
<th>accuracy</th><th>macro-F1</th><th>ECE</th><th>created</th></tr>{adapter_rows}</table>
<h2>Update runs</h2><table><tr><th>run</th><th>started</th><th>status</th><th>adapter</th><th>reason</th></tr>
{run_rows}</table></body></html>
"""
