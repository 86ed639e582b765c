"""bench.report: saved benchmark rows regenerate the README's Performance block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report

README = """# demo

## Performance

Prose before stays.

{start}
old table
{end}

## Development
"""


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    return tmp_path / "results"


def readme(tmp_path: Path) -> Path:
    path = tmp_path / "README.md"
    path.write_text(README.format(start=report.START, end=report.END), encoding="utf-8")
    return path


def test_saved_rows_replace_the_block_in_benchmark_order(results: Path, tmp_path: Path) -> None:
    report.save("scaling", [("scaling, 1 / 2 workers", "10 / 20 records/s")], note="Scaling note.")
    report.save("producer", [("producer", "**5.0x**"), ("producer, pure", "55,027 records/s")])
    saved = json.loads((results / "producer.json").read_text(encoding="utf-8"))
    assert saved["rows"] == [["producer", "**5.0x**"], ["producer, pure", "55,027 records/s"]]
    path = readme(tmp_path)
    assert report.update_readme(path)
    text = path.read_text(encoding="utf-8")
    assert "old table" not in text
    assert text.startswith("# demo\n\n## Performance\n\nProse before stays.\n\n" + report.START)
    assert text.endswith(report.END + "\n\n## Development\n")
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table == [
        "| benchmark | result |",
        "| producer | **5.0x** |",
        "| producer, pure | 55,027 records/s |",
        "| scaling, 1 / 2 workers | 10 / 20 records/s |",
    ]
    assert "Scaling note." in text
    assert saved["machine"] in text
    assert not report.update_readme(path)  # nothing new: unchanged


def test_a_readme_without_the_block_or_no_results_is_an_error(
    results: Path, tmp_path: Path
) -> None:
    path = readme(tmp_path)
    with pytest.raises(SystemExit, match="make bench"):
        report.update_readme(path)
    report.save("producer", [("producer", "1 record/s")])
    path.write_text("# no block\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"no .* block"):
        report.update_readme(path)
