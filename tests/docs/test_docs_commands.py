"""Every fenced ```bash and ```python block of README.md and docs/*.md runs as a user runs it.

- The blocks are found generically (any fence whose language is bash/sh/shell or python/py),
  in document order; no text of today's documents is pinned here.
- Each document runs in one bash session of its own, in an empty working folder (its own HOME),
  with what scripts/dev.sh tells a user to set: NOISYFIT_API_URL, NOISYFIT_API_KEY (a fresh
  user's) and the venv's bin first on PATH (`source .venv/bin/activate`); PYTHONPATH names this
  checkout, as the editable install does. Commands go through the installed `noisyfit` entry
  point, curl and python to the real service: uvicorn, a Celery worker, S3, Redis, PostgreSQL
  (tests/docs/conftest.py). A python block runs as `python FILE` in the same session.
- Placeholders: `job_…`, `sw_…` (a word, an underscore, an ellipsis) stand for the id of that
  kind that the latest earlier command printed.
- Sizes: before a command runs, its text is rewritten: `--epochs N` → `--epochs 1`,
  `--train-size N` → `--train-size 200`, and `"epochs": N`, `"train_size": N` in JSON alike. A
  failure shows each command as written and as run. The rewrite happens here, in plain sight,
  rather than through a cap inside the service, because a cap would be a code path that only
  tests take and would hide what a job really ran.
- Each command must exit 0, print no Python traceback and answer no API error
  (`{"error": {"code": ...}}`).
- A block just after `<!-- not run: REASON -->` is not run; each is listed as a skipped test
  with its reason. The README's two commands carry such a mark: `bash scripts/dev.sh` is what
  tests/e2e/test_devstack.py runs (scripts/devstack.py, after setup), and `bash scripts/test.sh`
  is this test suite, which CI runs; it is not run again from inside itself.
- Jobs a document leaves queued or running (a sweep it only submits) are cancelled after it.
"""

import queue
import re
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.docs.conftest import Service

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}
FENCE = re.compile(r"(`{3,}|~{3,})\s*([\w+-]*)")
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->")
SIZES = [
    (re.compile(r"(--epochs[= ])\d+"), r"\g<1>1"),
    (re.compile(r"(--train-size[= ])\d+"), r"\g<1>200"),
    (re.compile(r'("epochs"\s*:\s*)\d+'), r"\g<1>1"),
    (re.compile(r'("train_size"\s*:\s*)\d+'), r"\g<1>200"),
]
PLACEHOLDER = re.compile(r"\b([a-z]+)_…")
ID = re.compile(r"\b([a-z]+)_[0-9a-f]{16,}\b")
API_ERROR = re.compile(r'"error"\s*:\s*\{\s*"code"')
COMMAND_TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    document: str  # path from the repository root
    line: int  # of the opening fence, 1-based
    language: str  # "bash" or "python"
    text: str
    not_run: str | None  # the reason given in the mark, if any

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"


def find_blocks(text: str, document: str) -> list[Block]:
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.fullmatch(lines[i].strip())
        if not opening:
            i += 1
            continue
        fence, language = opening.groups()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence)), len(lines))
        if language.lower() in LANGUAGES:
            body = "\n".join(lines[i + 1 : end])
            blocks.append(Block(document, i + 1, LANGUAGES[language.lower()], body, _mark(lines, i)))
        i = end + 1
    return blocks


def _mark(lines: list[str], fence: int) -> str | None:
    before = next((line for line in reversed(lines[:fence]) if line.strip()), "")
    mark = NOT_RUN.search(before)
    return mark[1] if mark else None


def shell_commands(text: str) -> list[str]:
    """The complete commands of a bash block: continued lines and open quotes joined; lines
    that hold only a comment dropped."""
    commands, pending = [], []
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending.append(line)
        joined = "\n".join(pending)
        if not joined.endswith("\\") and _complete(joined):
            commands.append(joined)
            pending = []
    assert not pending, f"an unfinished command: {' '.join(pending)}"
    return commands


def _complete(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:  # a quote still open
        return False
    return True


def shrink(command: str) -> str:
    for pattern, replacement in SIZES:
        command = pattern.sub(replacement, command)
    return command


def all_blocks() -> list[Block]:
    return [b for path in DOCUMENTS for b in find_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]


@dataclass
class Ran:
    written: str
    command: str
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        shown = self.written if self.written == self.command else f"{self.written}\n  ran as: {self.command}"
        return f"$ {shown}\n  exit {self.returncode}\n  stdout: {self.stdout[-1500:]}\n  stderr: {self.stderr[-3000:]}"


@dataclass
class Shell:
    """One bash session, as in a user's terminal: variables and the folder carry over."""

    folder: Path
    env: dict[str, str]
    ids: dict[str, str] = field(default_factory=dict)  # kind ("job", "sw") → the latest printed id
    transcript: list[Ran] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.process = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=self.folder, env=self.env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.process.stdout], daemon=True).start()

    def run(self, written: str, where: str) -> Ran:
        command = self.substitute(shrink(written), where)
        n = len(self.transcript)
        out, err = self.folder / f".out{n}", self.folder / f".err{n}"
        self.process.stdin.write(f"{{ {command}\n}} >{out} 2>{err} </dev/null; echo \"__done__ {n} $?\"\n")
        self.process.stdin.flush()
        try:
            done = self.lines.get(timeout=COMMAND_TIMEOUT_S)
        except queue.Empty:
            self.close()
            pytest.fail(f"{where}: still running after {COMMAND_TIMEOUT_S} s:\n$ {command}\n{self.log()}")
        assert done.startswith(f"__done__ {n} "), done
        ran = Ran(written, command, int(done.split()[-1]), out.read_text(), err.read_text())
        self.transcript.append(ran)
        for found in reversed(list(ID.finditer(ran.stdout))):  # the first of each kind wins
            self.ids[found[1]] = found[0]
        return ran

    def substitute(self, command: str, where: str) -> str:
        def value(placeholder: re.Match) -> str:
            kind = placeholder[1]
            if kind not in self.ids:
                pytest.fail(f"{where}: {placeholder[0]} names a {kind}_ id, but no earlier command printed one")
            return self.ids[kind]

        return PLACEHOLDER.sub(value, command)

    def log(self) -> str:
        return "\n".join(str(ran) for ran in self.transcript)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def check(ran: Ran, where: str, shell: Shell) -> None:
    problem = (
        f"exit status {ran.returncode}" if ran.returncode != 0
        else "a Python traceback" if "Traceback (most recent call last)" in ran.stdout + ran.stderr
        else "an API error" if API_ERROR.search(ran.stdout)
        else None
    )  # fmt: skip
    assert problem is None, f"{where}: {problem}\n{shell.log()}"


BLOCKS = all_blocks()
RUN = sorted({b.document for b in BLOCKS if b.not_run is None}, key=[str(p.relative_to(ROOT)) for p in DOCUMENTS].index)
MARKED = [b for b in BLOCKS if b.not_run is not None]


@pytest.mark.parametrize("document", RUN)
def test_every_command_of_the_document_runs(document: str, service: Service, api_key: str, tmp_path: Path):
    service.workers.ensure_running()
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
        "NOISYFIT_API_URL": service.url,
        "NOISYFIT_API_KEY": api_key,
    }
    shell = Shell(home, env)
    try:
        for block in (b for b in BLOCKS if b.document == document and b.not_run is None):
            if block.language == "bash":
                for command in shell_commands(block.text):
                    check(shell.run(command, block.where), block.where, shell)
            else:
                script = home / f".block-{block.line}.py"
                script.write_text(shell.substitute(shrink(block.text), block.where))
                check(shell.run(f"python {script.name}", block.where), block.where, shell)
    finally:
        shell.close()


@pytest.mark.parametrize("block", MARKED, ids=[b.where for b in MARKED])
def test_blocks_marked_not_run_are_listed(block: Block):
    pytest.skip(f"{block.where}: not run: {block.not_run}")


def test_blocks_and_commands_are_read_as_a_reader_sees_them():
    text = "\n".join([
        "Intro", "", "<!-- not run: needs a GPU -->", "```bash", "nvidia-smi", "```", "",
        "```bash", "# a comment alone", "A=1  # a comment after", "noisyfit submit --dataset mnist \\",
        "  --epochs 50 --train-size 10000", "curl -d '{\"epochs\": 5,", "  \"train_size\": 10000}' x", "```",
        "```json", "{\"not\": \"run\"}", "```", "~~~python", "print(1)", "~~~",
    ])  # fmt: skip
    blocks = find_blocks(text, "X.md")
    assert [(b.line, b.language, b.not_run) for b in blocks] == [(4, "bash", "needs a GPU"), (8, "bash", None),
                                                                 (19, "python", None)]  # fmt: skip
    commands = shell_commands(blocks[1].text)
    assert commands == [
        "A=1  # a comment after",
        "noisyfit submit --dataset mnist \\\n  --epochs 50 --train-size 10000",
        "curl -d '{\"epochs\": 5,\n  \"train_size\": 10000}' x",
    ]
    assert shrink(commands[1]).endswith("--epochs 1 --train-size 200")
    assert shrink(commands[2]) == "curl -d '{\"epochs\": 1,\n  \"train_size\": 200}' x"
    assert RUN and "README.md" in RUN, "the README's blocks are found"
