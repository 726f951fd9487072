"""mkdocs hooks: the pages made from the code itself, so that they cannot drift from it.

* ``commands/<command>.md``: each command's ``--help`` (its description, example and options),
  and ``commands/index.md`` listing them;
* ``model-card.md``: the shipped model's card (``src/msnewlesions/model/weights/MODEL_CARD.md``);
* ``benchmarks.md``: each script of ``benchmarks/`` with its docstring (what it measures, how to
  run it).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

from msnewlesions.cli import command_paths

ROOT = Path(__file__).resolve().parents[1]


def page_name(command: list[str]) -> str:
    return "-".join(command)


def _help(command: list[str]) -> str:
    from typer.testing import CliRunner

    from msnewlesions.cli import app

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "100", "NO_COLOR": "1"})
    return "\n".join(line.rstrip() for line in result.output.splitlines()).strip("\n")


def _benchmarks() -> str:
    lines = [
        "# Benchmarks",
        "",
        "Scripts that print speed and accuracy figures; each says what it measures and how to run",
        "it. Run them from the repository root with the project's environment (`.venv/bin/python",
        "benchmarks/NAME.py --help`). The real-data ones read `../shared/data/open_ms_data`.",
        "",
    ]
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        doc = ast.get_docstring(ast.parse(script.read_text())) or ""
        lines += [f"## {script.name}", "", "```text", doc.strip(), "```", ""]
    return "\n".join(lines)


def on_config(config: Any) -> Any:
    """The command pages go under "Commands" in the navigation, after its index."""
    pages = [f"commands/{page_name(command)}.md" for command in command_paths()]
    for index, entry in enumerate(config["nav"]):
        if isinstance(entry, dict) and entry.get("Commands") == "commands/index.md":
            config["nav"][index] = {"Commands": ["commands/index.md", *pages]}
    return config


def on_files(files: Files, config: Any) -> Files:
    commands = command_paths()
    index = ["# Commands", "", "Every command, with its options and an example (`--help`).", ""]
    for command in commands:
        words = " ".join(command)
        content = f"# msnewlesions {words}\n\n```text\n{_help(command)}\n```\n"
        files.append(File.generated(config, f"commands/{page_name(command)}.md", content=content))
        index.append(f"- [msnewlesions {words}]({page_name(command)}.md)")
    files.append(File.generated(config, "commands/index.md", content="\n".join(index) + "\n"))
    card = (ROOT / "src/msnewlesions/model/weights/MODEL_CARD.md").read_text()
    files.append(File.generated(config, "model-card.md", content=card))
    files.append(File.generated(config, "benchmarks.md", content=_benchmarks()))
    return files
