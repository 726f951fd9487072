"""--help tells the truth: every default the option texts state reaches the user."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("command", "stated"),
    [
        (
            ["segment"],
            ["(default: the model shipped inside)", "(default: the model's own, else 0.5)"],
        ),
        (["train"], ["(default: beside the dataset's raw folder)", "(default: 250)"]),
        (["synthesize"], ["(default: OUT/../anatomy)"]),
        (
            ["bids"],
            [
                "sub-*/ses-*/anat/*_FLAIR.nii.gz",
                "as many as the memory holds at 3.5 GB each",
                "--participant_label",
            ],
        ),
        (["batch"], ["id,baseline,followup", "(default: the model shipped inside)"]),
    ],
)
def test_help_shows_the_defaults_its_options_state(
    command: list[str],
    stated: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # one option per line: the texts are not wrapped
    code, out, _ = run_cli([*command, "--help"], capsys)
    assert code == 0
    text = re.sub(r"[\s│]+", " ", out)  # the box's borders and line breaks
    for default in stated:
        assert default in text
