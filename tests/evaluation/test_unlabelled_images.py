"""The fusion eval's unlabelled chest films: which rows it writes, and never a test patient's film."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kbservice.evaluation.unlabelled_images import unlabelled_case_file


def test_todo_films_of_test_patients_are_left_out_and_npz_images_become_files(tmp_path: Path) -> None:
    (tmp_path / "covid").mkdir()
    (tmp_path / "covid" / "xray_licensed_metadata.csv").write_text(
        "patientid,finding,image_png\np1,todo,a.png\np2,todo,b.png\np2,COVID-19,c.png\np3,todo,d.png\n"
    )
    np.savez(tmp_path / "films.npz", train_images=np.zeros((3, 8, 8), dtype=np.uint8))
    npz = str(tmp_path / "films.npz")
    path, counts = unlabelled_case_file(
        ["todo", npz], covid_folder=tmp_path / "covid", workdir=tmp_path, test_patients={"p1"}
    )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert counts == [{"source": "todo", "images": 2}, {"source": npz, "images": 3}]
    assert [Path(r["images"][0]).name for r in rows] == ["b.png", "d.png", "0.png", "1.png", "2.png"]
    assert all("diagnosis" not in r for r in rows) and len({r["id"] for r in rows}) == 5
    assert all(Path(r["images"][0]).is_file() for r in rows[2:])
    with pytest.raises(ValueError, match=r"'todo' or an existing \.npz file, not 'films\.zip'"):
        unlabelled_case_file(["films.zip"], covid_folder=tmp_path / "covid", workdir=tmp_path, test_patients=())
