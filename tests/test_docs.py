"""The documentation cannot drift from the code: every relative link resolves, every `nndiff ...`
command line shown parses with today's options, and the cheap ones run on a tiny task."""

import re
import shlex
from pathlib import Path

import pytest
from jsonargparse import ArgumentParser

from nndiff.cli.main import main
from nndiff.cli.parser import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```(?:bash|sh)\n(.*?)```", re.S)
INLINE = re.compile(r"`(nndiff [^`]+)`")


def links(text: str) -> list[str]:
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def command_lines(text: str) -> list[list[str]]:
    """Every nndiff command shown: whole lines in code blocks (after `&&`, before a comment) and
    inline `nndiff ...` spans with options; `torchrun ... -m nndiff ...` counts from `nndiff`."""
    shown = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if "-m" in words and "nndiff" in words[words.index("-m") + 1 : words.index("-m") + 2]:
                    words = words[words.index("-m") + 1 :]
                if words[:1] == ["nndiff"]:
                    shown.append(words[1:])
    for span in INLINE.findall(text):
        words = shlex.split(span)
        named_only = not any(w.startswith("-") for w in words)  # `nndiff doctor` names the command in a sentence
        if not named_only and not any(w in ("COMMAND", "...", "…") for w in words):
            shown.append(words[1:])
    return shown


def parse_error(words: list[str], parser: ArgumentParser) -> str | None:
    """None if the command line parses; else what the parser said."""
    if "--help" in words or "--config" in words:  # --config reads the file it names
        words = words[: words.index("--help" if "--help" in words else "--config")]
    try:
        parser.parse_args(words)
    except (Exception, SystemExit) as e:  # jsonargparse raises or exits, by version
        return f"{' '.join(words)}: {e}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    broken = [t for t in links(page.read_text()) if not (page.parent / t.split("#")[0]).exists()]
    assert not broken, broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_shown_parses(page):
    parser = build_parser()
    errors = [e for words in command_lines(page.read_text()) if (e := parse_error(words, parser))]
    assert not errors, errors


def test_the_readme_shows_commands_and_stays_short():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert len(command_lines(text)) >= 10
    assert all((ROOT / "docs" / p).exists() for p in re.findall(r"\(docs/([\w-]+\.md)\)", text))


def test_the_checks_catch_a_broken_link_and_a_broken_command(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[there](missing.md) and [web](https://example.org)\n\n```bash\nnndiff run --no-such-option 3\n```\n")
    assert links(page.read_text()) == ["missing.md"]
    assert not (tmp_path / "missing.md").exists()
    (words,) = command_lines(page.read_text())
    assert parse_error(words, build_parser()) is not None
    assert parse_error(["run", "--out", "x", "--seed", "3"], build_parser()) is None


def test_the_cheap_commands_of_the_readme_run(tmp_path, tiny_run, capsys):
    """The README's reading commands, on a real (tiny) run: each exits 0 and prints what it promises."""
    assert main(["tasks"]) == 0
    listed = capsys.readouterr().out
    assert "mnist1d-cnn" in listed
    for name in ("mnist1d-binary", "digits-binary", "mnist1d-domains"):  # the families too, and how to ask
        assert f"\n{name} " in listed, name
    assert "--code (10 binary digits)" in listed and "--examples FILE" in listed
    assert main(["inspect", "--task", "mnist1d-cnn", "--select", "bn*"]) == 0
    assert "bn3.weight" in capsys.readouterr().out
    assert main(["--quiet", "evaluate", "--run", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    assert "val-selected" in out and "weight average" in out
    assert main(["--quiet", "doctor", "--run", str(tiny_run)]) in (0, 1)  # 1: a failing check, said
    assert "generator spread" in capsys.readouterr().out
