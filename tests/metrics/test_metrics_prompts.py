"""Prompt files: plain text, PartiPrompts TSV, DrawBench CSV, and errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.metrics.prompts import PromptFileError, detect_layout, load_prompts


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_text_one_prompt_per_line(tmp_path: Path) -> None:
    prompts = load_prompts(_write(tmp_path / "p.txt", "# my prompts\na cat\n\n  a dog on a skateboard  \n"))
    assert prompts.layout == "text"
    assert prompts.prompts == ["a cat", "a dog on a skateboard"]
    assert [e.line for e in prompts.entries] == [2, 4] and prompts.categories == [None, None]
    kept = load_prompts(tmp_path / "p.txt", skip_comments=False)
    assert kept.prompts[0] == "# my prompts"


def test_partiprompts_tsv(tmp_path: Path) -> None:
    text = (
        "Prompt\tCategory\tChallenge\tNote\n"
        "bond\tAbstract\tBasic\tBiology-inspired concepts with multiple meanings\n"
        'A robot painted as graffiti. The words "Fly an airplane" are written on the wall.\tOutdoor Scenes\tComplex\t\n'
        '"Hello" on a sign\tArtifacts\tWriting & Symbols\t\n'
    )
    prompts = load_prompts(_write(tmp_path / "PartiPrompts.tsv", text))
    assert prompts.layout == "parti" and len(prompts) == 3
    assert prompts.prompts[1].endswith('"Fly an airplane" are written on the wall.')
    assert prompts.prompts[2] == '"Hello" on a sign'  # TSV is unquoted: quotes belong to the prompt
    assert prompts.categories == ["Abstract", "Outdoor Scenes", "Artifacts"]
    note = "Biology-inspired concepts with multiple meanings"
    assert prompts.entries[0].extra == {"Challenge": "Basic", "Note": note}
    assert [e.line for e in prompts.entries] == [2, 3, 4]
    assert list(prompts.by_category()) == ["Abstract", "Outdoor Scenes", "Artifacts"]


def test_drawbench_csv_with_bom_quotes_and_multiline(tmp_path: Path) -> None:
    text = (
        '\ufeffPrompts,Category\n"A red colored car.",Colors\n"A sign that says ""Deep Learning"".",Text\n'
        '"two\nlines",Misspellings\nplain prompt,\n'
    )
    prompts = load_prompts(_write(tmp_path / "drawbench.csv", text))
    assert prompts.layout == "drawbench"
    assert prompts.prompts == ["A red colored car.", 'A sign that says "Deep Learning".', "two\nlines", "plain prompt"]
    assert prompts.categories == ["Colors", "Text", "Misspellings", None]
    assert [e.line for e in prompts.entries] == [2, 3, 4, 6]


def test_layout_is_detected_from_the_header_not_the_extension(tmp_path: Path) -> None:
    assert detect_layout("Prompts,Category") == "drawbench"
    assert detect_layout("Prompt\tCategory\tChallenge\tNote") == "parti"
    assert detect_layout("a cat, sitting") == "text"
    assert load_prompts(_write(tmp_path / "list.txt", "Prompt,Category\na cat,Animals\n")).layout == "parti"


def test_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad_header = _write(tmp_path / "bad.csv", "text,category\na cat,Animals\n")
    with pytest.raises(PromptFileError, match=r"bad\.csv, line 1: header has no 'Prompt'"):
        load_prompts(bad_header)
    empty_cell = _write(tmp_path / "empty.csv", "Prompts,Category\nok,A\n,B\n")
    with pytest.raises(PromptFileError, match=r"empty\.csv, line 3: empty 'Prompts' cell"):
        load_prompts(empty_cell)
    short_row = _write(tmp_path / "short.tsv", "Category\tPrompt\nAnimals\ta cat\nPeople\n")
    with pytest.raises(PromptFileError, match=r"short\.tsv, line 3: 1 field\(s\)"):
        load_prompts(short_row)
    (tmp_path / "latin1.txt").write_bytes(b"a cat\ncaf\xe9\n")
    with pytest.raises(PromptFileError, match=r"latin1\.txt, line 2: not valid"):
        load_prompts(tmp_path / "latin1.txt")
    assert load_prompts(tmp_path / "latin1.txt", encoding="latin-1").prompts == ["a cat", "café"]
    with pytest.raises(PromptFileError, match="no prompts"):
        load_prompts(_write(tmp_path / "blank.txt", "\n\n"))
    with pytest.raises(PromptFileError, match="not found"):
        load_prompts(tmp_path / "missing.txt")
