"""The README's "Your own keypoints" commands run as pasted, on a scaled-down budget (a tiny backbone, 4 steps)."""

from __future__ import annotations

import json
import os
import re
import shlex

import pytest

from contrastive_landmarks.cli import main
from tests.conftest import ROOT

#: Appended to the README's finetune command only: a tiny backbone and a few steps, so CI can afford it.
SCALED_DOWN = ["--backbone", "test_resnet", "--steps", "4", "--image-size", "64", "--batch-size", "2", "--no-progress"]


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    # the three steps on the labelled project (the "Videos" subsection needs a project with videos)
    section = text.split("## Your own keypoints", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            if line.startswith("contrastive-landmarks "):
                commands.append(shlex.split(line, comments=True)[1:])
    return commands


def test_the_section_has_the_three_steps():
    assert [c[0] for c in readme_commands()] == ["finetune", "evaluate", "predict"]


@pytest.mark.data
def test_readme_commands_run_as_pasted(shared_data, tmp_path, monkeypatch, capsys):
    work = tmp_path / "checkout"
    work.mkdir()
    os.symlink(shared_data.parent, tmp_path / "shared")  # the README's ../shared/data, from the checkout
    monkeypatch.chdir(work)
    for argv in readme_commands():
        extra = SCALED_DOWN if argv[0] == "finetune" else []
        assert main([*argv, *extra]) == 0, (argv, capsys.readouterr().err)
    metrics = json.loads((work / "models" / "reaching" / "test.json").read_text())
    assert metrics["frames"] == 11 and "mean_pose" in metrics
    rows = (work / "models" / "reaching" / "points.csv").read_text().splitlines()
    assert len(rows) == 3 + 55  # DeepLabCut's 3 header rows, one row per frame of the folder
