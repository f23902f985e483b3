"""What a run leaves behind: on stderr, only privatellm's own lines; no process still running."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES, leftovers, living_descendants, run_cli, stop

# A real-sized page: bs4 warns that a document opening with `<?xml` is XML unless `</html` (its
# test for HTML) shows within the first 500 bytes.
XHTML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN"
  "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
<head><title>Alpacas and llamas</title>
<meta http-equiv="Content-Type" content="text/html; charset=utf-8" /></head>
<body>
{paragraphs}</body></html>
"""
FOREIGN = ("Warning", "warn(", "Failed to load", "Traceback", "deprecat")
# A tqdm bar as the CLI draws it: "[desc: ] NN%|bar| n/total [times, rate]".
BAR = re.compile(r"^([\w ]+: )?\s*\d+%\|[^|]*\| \d+/\d+ \[.*\]$")


Ingested = tuple[Path, subprocess.CompletedProcess[str]]  # data dir, the ingest's run


def foreign_lines(stderr: str) -> list[str]:
    """Returns the stderr lines that are neither a progress bar nor empty."""
    lines = (line.strip() for line in re.split(r"[\r\n]", stderr))
    return [line for line in lines if line and not BAR.match(line)]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Ingested:
    """An XHTML page, a PDF and a Chinese text file ingested by the real CLI and bundled model."""
    root = tmp_path_factory.mktemp("quiet")
    docs = root / "docs"
    docs.mkdir()
    paragraph = "<p>Alpacas&nbsp;are kept for their fleece in the Andes, llamas for carrying.</p>"
    (docs / "alpacas.xhtml").write_text(XHTML.format(paragraphs=paragraph * 20), encoding="utf-8")
    shutil.copy(SAMPLES / "llama-history.pdf", docs)
    shutil.copy(SAMPLES / "本地运行Llama笔记.txt", docs)
    data = root / "data"
    return data, run_cli("--data-dir", data, "ingest", docs)


def test_ingest_prints_only_its_own_lines(ingested: Ingested) -> None:
    _, done = ingested
    assert done.returncode == 0, done.stderr
    assert "3 added" in done.stdout
    assert not any(word in done.stderr for word in FOREIGN), done.stderr
    assert foreign_lines(done.stderr) == []


def test_retrieve_and_ask_print_only_their_own_lines(ingested: Ingested) -> None:
    data, _ = ingested
    found = run_cli("--data-dir", data, "retrieve", "What are alpacas kept for?")
    assert found.returncode == 0 and "alpacas.xhtml" in found.stdout, found.stderr
    asked = run_cli("--data-dir", data, "ask", "Who started the llama.cpp project?")
    assert asked.returncode == 0 and "Gerganov" in asked.stdout, asked.stderr  # the model ran
    for done in (found, asked):
        assert not any(word in done.stderr for word in FOREIGN), done.stderr
        assert foreign_lines(done.stderr) == []


def test_a_process_left_running_is_found_with_its_command_line() -> None:
    before = living_descendants()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        found = leftovers(before, seconds=0.5, own_trees_only=True)
        assert [p.pid for p in found] == [sleeper.pid]
        assert "time.sleep(120)" in " ".join(found[0].cmdline())
    finally:
        sleeper.kill()
        sleeper.wait()
    assert leftovers(before, seconds=5, own_trees_only=True) == []


@pytest.mark.skipif(sys.platform != "linux", reason="orphans come back to pytest only on Linux")
def test_a_server_orphaned_by_killing_its_subshell_is_found() -> None:
    """The bug test_offline.py had: `kill $!` on a shell function run in the background stops the
    subshell; the process the function started lives on, its parent gone."""
    before = living_descendants()
    script = "serve() { sleep 120; }; serve > /dev/null & sleep 0.5; kill $!; wait || true"
    subprocess.run(["bash", "-c", script], check=True, timeout=30)
    found = leftovers(before, seconds=0.5, own_trees_only=True)
    try:
        assert [" ".join(p.cmdline()) for p in found] == ["sleep 120"]
    finally:
        stop(found)
    assert leftovers(before, seconds=5, own_trees_only=True) == []
