"""A PDF compile that times out or is interrupted leaves no latexmk or xelatex running.

The engine runs in a process group of its own (backstep.render.pdf); on timeout, Ctrl-C
(KeyboardInterrupt) and SIGTERM the whole group is ended. A compile that timed out is a failed
compile: its folder is kept and named; an interrupted one leaves no folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from tex_tools import need_tex

from backstep.render import pdf
from backstep.render.pdf import PdfError, compile_pdf

# TeX expands \x to \x for ever: xelatex spins at 100 % CPU and writes nothing more.
LOOP = "\\documentclass{article}\n\\begin{document}\n\\def\\x{\\x}\\x\n\\end{document}\n"


def _living(pgid: int) -> list[str]:
    """The processes of group `pgid` that are not zombies, as 'pid name'."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            found.append(f"{entry.name} {name}")
    return found


def _in_folder(folder: Path) -> list[str]:
    """Any process (of any group) that works in `folder` or names it on its command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == str(os.getpid()):
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(folder)) or str(folder) in cmdline:
            found.append(f"{entry.name} {cmdline.strip()}")
    return found


@pytest.fixture
def engine(monkeypatch, tmp_path):
    """Records the engine's process group; temporary folders go to tmp_path/tmp."""
    need_tex()
    if not Path("/proc/self/stat").exists():
        pytest.skip("reads /proc to find the engine's processes")
    groups: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        assert kwargs.get("start_new_session"), "the engine must run in its own session"
        groups.append(proc)
        return proc

    monkeypatch.setattr(pdf.subprocess, "Popen", popen)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return groups, temp


def _assert_ended(groups: list[subprocess.Popen]) -> None:
    assert len(groups) == 1
    (proc,) = groups
    assert proc.returncode is not None  # latexmk reaped: no zombie of ours
    # an engine orphaned by latexmk's end may stay a zombie until init reaps it: dead, holding nothing.
    # SIGKILL is sent to the whole group before compile_pdf returns, but a process dies when the kernel
    # next runs it: on a loaded machine xelatex can still be seen running for a moment (it failed once
    # so in CI). Wait for it, up to 10 s; one that outlives that was not killed.
    deadline = time.monotonic() + 10
    while _living(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _living(proc.pid) == []


def test_timeout_ends_the_whole_group_and_keeps_the_folder(engine, monkeypatch, tmp_path):
    groups, temp = engine
    monkeypatch.setattr(pdf, "TIMEOUT", 8)
    with pytest.raises(PdfError) as caught:
        compile_pdf(LOOP, tmp_path / "loop.pdf", name="loop")
    err = caught.value
    _assert_ended(groups)
    assert "longer than 8 s" in str(err)
    # a timeout is a failed compile: the folder stays, named in the message, with the source and the log
    assert err.folder is not None and err.folder.parent == temp
    assert str(err.folder) in str(err)
    assert (err.folder / "loop.tex").read_text() == LOOP
    assert (err.folder / "loop.log").is_file(), "xelatex had started: the test must kill a running engine"
    assert _in_folder(err.folder) == []
    assert not (tmp_path / "loop.pdf").exists()


def _interrupt_after(seconds: float, signum: int) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()
    return timer


def test_ctrl_c_ends_the_whole_group_and_removes_the_folder(engine, monkeypatch, tmp_path):
    groups, temp = engine
    monkeypatch.setattr(pdf, "TIMEOUT", 120)
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT does not raise KeyboardInterrupt here")
    timer = _interrupt_after(4.0, signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            compile_pdf(LOOP, tmp_path / "loop.pdf", name="loop")
    finally:
        timer.cancel()
    _assert_ended(groups)
    assert list(temp.iterdir()) == []
    assert _in_folder(temp) == []
    assert not (tmp_path / "loop.pdf").exists()


def test_sigterm_ends_the_whole_group_removes_the_folder_and_exits_143(engine, monkeypatch, tmp_path):
    groups, temp = engine
    monkeypatch.setattr(pdf, "TIMEOUT", 120)
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM has a handler here: backstep leaves it alone")
    timer = _interrupt_after(4.0, signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as caught:
            compile_pdf(LOOP, tmp_path / "loop.pdf", name="loop")
    finally:
        timer.cancel()
    assert caught.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the compile
    _assert_ended(groups)
    assert list(temp.iterdir()) == []
    assert not (tmp_path / "loop.pdf").exists()


def test_a_good_document_still_compiles_and_leaves_nothing(engine, tmp_path):
    groups, temp = engine
    out = tmp_path / "ok.pdf"
    compile_pdf("\\documentclass{article}\n\\begin{document}\nfine\n\\end{document}\n", out, name="ok")
    assert out.read_bytes().startswith(b"%PDF")
    _assert_ended(groups)
    assert list(temp.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
