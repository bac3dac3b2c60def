"""`--format pdf`: a complete LaTeX document compiled by a real engine, `latexmk -xelatex`.

xelatex is used for every language: it reads the document as UTF-8, takes Latin Modern from the
system's OpenType fonts, and with xeCJK sets Chinese in a CJK font (the preamble picks Noto Serif
CJK SC, then AR PL UMing, then Fandol). The document is compiled in a fresh temporary folder; on
success the PDF is copied to the output and the folder removed. On failure the error is shown
as LaTeX reports it — the `! …` line or `file:line: …`, the `l.N` context and the offending line
of the source — and the folder is kept so that the whole log can be read.

A document can come from a stranger's template or problem file, so LaTeX runs "paranoid"
(kpathsea's ``openin_any=p``, ``openout_any=p``: no absolute paths, no ``..``, no dot files, for
reading as for writing; a document reads only its own folder and the TeX installation) with shell
escape off (``shell_escape=f`` and ``-no-shell-escape``: no ``\\write18``), and latexmk reads no rc
file (``-norc``). The PDF is written with ``write_output``: never through a symbolic link, never
over an input, and by a temporary file renamed over it, so a failed run leaves the old PDF.

latexmk runs in a process group of its own, with every engine it starts. When the compile takes
longer than ``TIMEOUT`` seconds, or the user interrupts it (Ctrl-C: KeyboardInterrupt; SIGTERM:
SystemExit(143), while the compile runs and SIGTERM has its default action), the whole group is
ended — SIGTERM, then SIGKILL after ``GRACE`` seconds — so no latexmk or xelatex outlives the
command. An interrupted compile leaves no folder behind; one that timed out is a failed compile
and keeps its folder, like any other failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import BackstepError
from ..model import Derivation
from ..userfiles import check_output_path, write_output
from .registry import writer

INSTALL = (
    "apt-get install --no-install-recommends latexmk texlive-xetex texlive-lang-chinese fonts-noto-cjk "
    "(Debian/Ubuntu; elsewhere: TeX Live with latexmk, xetex, xecjk and ctex)"
)
ENGINE = "xelatex"
TIMEOUT = 300  # seconds for one document
GRACE = 2.0  # seconds between SIGTERM and SIGKILL to the engine's process group
# kpathsea reads these from the environment: no file outside the document's folder (and TeX's own
# trees) is read or written, and no shell command runs, whatever the document says.
PARANOID = {"openin_any": "p", "openout_any": "p", "shell_escape": "f"}


class PdfError(BackstepError):
    """No LaTeX engine, or LaTeX could not compile the document (kept, with its log, in `folder`)."""

    kind = "pdf error"
    folder: Path | None = None


def missing_engine(lang: str = "en") -> str | None:
    """What is missing to compile a PDF in `lang`, as a message that says how to get it; None: nothing."""
    missing = [tool for tool in ("latexmk", ENGINE) if shutil.which(tool) is None]
    if missing:
        return (
            f"PDF output needs a LaTeX engine ({' and '.join(missing)} not found): {INSTALL}; "
            "or use --format latex --standalone to get the LaTeX source and compile it elsewhere"
        )
    if lang == "zh" and not (_has_tex_file("xeCJK.sty") and _has_tex_file("ctexhook.sty")):
        return (
            "a PDF in Chinese needs xeCJK and a CJK font: apt-get install --no-install-recommends "
            "texlive-lang-chinese fonts-noto-cjk; or use --format latex --standalone --lang zh"
        )
    return None


def refuse_missing_engine(lang: str = "en") -> None:
    """A PdfError, before any work, when a PDF in `lang` cannot be compiled here."""
    problem = missing_engine(lang)
    if problem:
        raise PdfError(problem)


def _has_tex_file(name: str) -> bool:
    kpsewhich = shutil.which("kpsewhich")
    if kpsewhich is None:
        return True  # cannot tell: let LaTeX say
    try:
        found = subprocess.run([kpsewhich, name], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return True
    return bool(found.stdout.strip())


@writer("pdf", choices=("notation", "lang", "template_dir"), preflight=refuse_missing_engine)
def write_pdf(
    d: Derivation,
    output: Path,
    notation: str = "bar",
    lang: str = "en",
    template_dir: Path | str | None = None,
    inputs: Iterable[Path | str | None] = (),
) -> None:
    """The derivation as a PDF: the standalone LaTeX document (document.tex.j2), compiled. The
    PDF never replaces one of `inputs` (the files the command read)."""
    from .latex import render_latex

    check_output_path(output, inputs)  # refused before LaTeX spends its time
    refuse_missing_engine(lang)
    tex = render_latex(d, standalone=True, notation=notation, lang=lang, template_dir=template_dir)
    compile_pdf(tex, Path(output), lang=lang, name=Path(output).stem, inputs=inputs)


def compile_pdf(
    tex: str, output: Path, lang: str = "en", name: str = "document", inputs: Iterable[Path | str | None] = ()
) -> None:
    """Compile the complete LaTeX document `tex` to the PDF file `output`; PdfError if it cannot.
    `output` is refused (UsageError) when it is a symbolic link or one of `inputs`."""
    inputs = list(inputs)
    output = check_output_path(output, inputs)
    refuse_missing_engine(lang)
    name = re.sub(r"[^A-Za-z0-9_-]", "_", name) or "document"
    folder = Path(tempfile.mkdtemp(prefix="backstep-pdf-"))
    source = folder / f"{name}.tex"
    source.write_text(tex, encoding="utf-8")
    command = [
        "latexmk",
        f"-{ENGINE}",
        "-norc",
        "-latexoption=-no-shell-escape",
        "-interaction=nonstopmode",
        "-halt-on-error",
        "-file-line-error",
    ]
    env = dict(os.environ, max_print_line="10000", error_line="254", half_error_line="238", **PARANOID)
    try:
        returncode, engine_output = _run_engine([*command, source.name], folder, env)
    except subprocess.TimeoutExpired:
        err = PdfError(f"LaTeX took longer than {TIMEOUT} s on {source}; its log is {folder / (name + '.log')}")
        err.folder = folder
        raise err from None
    except BaseException:  # interrupted (KeyboardInterrupt, SIGTERM) or the engine could not start
        shutil.rmtree(folder, ignore_errors=True)
        raise
    pdf = folder / f"{name}.pdf"
    if returncode != 0 or not pdf.is_file():
        log = folder / f"{name}.log"
        log_text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else engine_output
        err = PdfError(describe_failure(log_text, tex, source.name) + f"\n  (the document and its full log: {folder})")
        err.folder = folder
        raise err
    try:
        write_output(output, pdf.read_bytes(), inputs=inputs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_engine(command: list[str], folder: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run `command` in `folder` in a new session (its own process group) and return its exit status and
    output. On TIMEOUT (subprocess.TimeoutExpired) or any exception while it runs — KeyboardInterrupt,
    SystemExit from SIGTERM — the whole group is ended before the exception goes on."""
    with _sigterm_raises():
        proc = subprocess.Popen(
            command,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + TIMEOUT
            while True:
                # in slices of a second: a signal that reached another thread is handled within one
                try:
                    output, _ = proc.communicate(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() >= deadline:
                        raise
        except BaseException:
            _end_group(proc)
            raise
    _end_group(proc)  # an engine that outlived latexmk (it should not) holds no CPU afterwards
    return proc.returncode, output or ""


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM to `proc`'s process group, SIGKILL after GRACE seconds, and `proc` reaped."""
    if not hasattr(os, "killpg"):  # not POSIX: no process groups, only the process itself
        proc.kill()
        proc.communicate()
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=GRACE)
    except (ProcessLookupError, subprocess.TimeoutExpired):  # the group is gone already; or it lingers
        pass
    finally:  # also when a second Ctrl-C cuts the grace short
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group ignored SIGTERM
        except ProcessLookupError:
            pass
        try:
            proc.communicate(timeout=GRACE)  # reaps it and closes the pipes
        except subprocess.TimeoutExpired:  # a process outside the group still holds the pipe
            proc.kill()


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the engine runs, SIGTERM raises SystemExit(128 + SIGTERM) — so that the group is ended and
    the folder removed — instead of ending Python on the spot. Only where SIGTERM has its default action
    (a program's own handler is left alone), and only in the main thread, the one where Python sets handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def describe_failure(log: str, tex: str, filename: str = "document.tex") -> str:
    """The errors of a LaTeX log, each with its context line and the source line it points at."""
    lines = log.splitlines()
    source = tex.splitlines()
    found: list[str] = []
    i = 0
    pattern = re.compile(rf"^(?:\./)?{re.escape(filename)}:(\d+): (.*)$")
    while i < len(lines) and len(found) < 12:
        line = lines[i]
        m = pattern.match(line)
        if m or line.startswith("! "):
            found.append("  " + line.strip())
            number = int(m.group(1)) if m else None
            for follow in lines[i + 1 : i + 8]:  # TeX's context: up to the `l.N …` line
                context = re.match(r"^l\.(\d+) ?(.*)$", follow)
                if context:
                    number = number or int(context.group(1))
                    found.append("  " + follow.rstrip())
                    break
            if number and 1 <= number <= len(source):
                found.append(f"  line {number} of the document: {source[number - 1].strip()}")
        i += 1
    if not found:
        tail = [line for line in lines[-15:] if line.strip()]
        found = ["  " + line for line in tail]
    return "LaTeX could not compile the document:\n" + "\n".join(dict.fromkeys(found))
