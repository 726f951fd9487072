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


def test_every_command_has_whole_sentences_and_an_example(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each command's --help: a description whose paragraphs end as sentences do, and one
    example line that starts with the program's name."""
    monkeypatch.setenv("COLUMNS", "300")
    from msnewlesions.cli import command_paths

    commands = command_paths()
    assert len(commands) >= 15
    for command in commands:
        code, out, _ = run_cli([*command, "--help"], capsys)
        assert code == 0, command
        description = out.split("Usage:", 1)[1].split("╭", 1)[0]
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", description)[1:]]
        paragraphs = [p for p in paragraphs if p]
        examples = [p for p in paragraphs if p.startswith("Example: msnewlesions ")]
        assert len(examples) == 1, (command, paragraphs)
        for paragraph in paragraphs:
            assert paragraph.endswith((".", ")")) or paragraph in examples, (command, paragraph)
