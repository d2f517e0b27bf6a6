"""The commands README.md and HELP.md show, run as written against `--simulate`.

Every code block of the two documents is read (indented or fenced), and every inline
`curl …` in their prose. Shell blocks are split into commands (a backslash or an open quote
continues a line). A command that starts the proxy (`python3 -m proxy …`) is started as
written, in a process of its own, with `PW_PORT=0`, `PW_BIND_ADDRESS=127.0.0.1` (the tests
touch loopback only; the documents' "every interface" is not reproduced) and a scratch
`PW_AUTH_PATH`; the commands after it in the same section (`## …`) run against it, with the
documented host and port (`localhost:8675`) mapped to the one it really listens on. A section
without a start command uses its document's first one (README: the quick start) or, for
HELP.md, whose examples assume a proxy with its secrets in the shell, `DEFAULT_START`.

`curl` runs with `--fail-with-body`, so an HTTP error fails the example as a wrong exit status
would; a stream (`curl -N`) passes once it has delivered an event. Prometheus configuration
snippets are checked with `promtool check config`. What cannot run here is skipped with its
reason (`SKIPS`: hardware, Docker, a broker, the network, the suite itself), so
`pytest -rs` lists it; a shell command this test does not know how to treat fails, so a new
kind of example gets a decision rather than silence.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("curl") is None,
                                reason="curl not found (tests/run.sh installs Debian's curl)")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "HELP.md")
DEFAULT_START = {"README.md": "", "HELP.md": (
    "PW_CONTROL_SECRET=demo PW_OPENC2_TOKEN=demo2 python3 -m proxy --simulate")}
DOCUMENTED = re.compile(r"\b(?:localhost|127\.0\.0\.1):8675\b")
CONFIG = re.compile(r"^(?:scrape_configs|services):|^listener ")  # blocks that are files, not commands
# Blocks that show what the proxy prints (log lines, refusals, answer bodies): nothing to run.
OUTPUT = re.compile(r"^(?:configuration error: |(?:DEBUG|INFO|WARNING|ERROR) proxy\b|\{\")")
START = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*python3 -m proxy(?:\s|$)(?!.*--check)")
RUNNABLE = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:curl|python3 -m proxy)\s")
SKIPS = (  # (pattern, reason): documented commands that cannot run here, and why
    (r"^\s*docker\b|^services:", "needs Docker"),
    (r"\bPW_HOST=|--config gateways\.yaml\b", "needs a Powerwall gateway"),
    (r"\bPW_MQTT_HOST=|\bmosquitto_sub\b|^listener\b", "needs an MQTT broker"),
    (r"^\s*apt-get\b", "installs Debian packages (root and the network)"),
    (r"-m venv\b|^\. \.venv/|\bpip install\b", "sets up a virtual environment from the package index"),
    (r"\btests/run\.sh\b|-m pytest\b", "runs the tests, of which this is one"),
    (r"\bbench/", "the benchmark: minutes of load with wrk"),
)
STREAM_WAIT = 20.0  # s for a stream (curl -N) to deliver its first event
COMMAND_WAIT = 30.0  # s for any other command
CURL = 'curl() { command curl --fail-with-body --silent --show-error "$@"; }; set -e; '


@dataclass(frozen=True)
class Example:
    doc: str
    line: int
    text: str  # a shell command (continuations joined) or a whole configuration snippet
    start: str  # the start command of the proxy it runs against

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


# ---- reading the documents -------------------------------------------------------------------

def _blocks(lines: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) of each code block: fenced, or indented after a blank line."""
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            yield i + 2, lines[i + 1:end]
            i = end + 1
        elif lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            yield i + 1, [line[4:] for line in lines[i:end]]
            i = end
        else:
            i += 1


def _complete(text: str) -> bool:
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:  # an open quote: the command goes on
        return False
    return True


def commands(block: list[str], first: int) -> Iterator[tuple[int, str]]:
    """(line, command) of a shell block, continuation lines joined."""
    pending, at = "", first
    for n, line in enumerate(block, first):
        if not pending and not line.strip():
            continue
        at = at if pending else n
        pending = f"{pending}\n{line}" if pending else line
        if _complete(pending):
            yield at, pending.strip()
            pending = ""
    if pending.strip():
        yield at, pending.strip()


def examples(doc: str) -> list[Example]:
    lines = (ROOT / doc).read_text().split("\n")
    found: list[tuple[int, str]] = []
    for first, block in _blocks(lines):
        text = "\n".join(block).strip()
        if OUTPUT.match(text):
            continue
        if CONFIG.match(text):
            found.append((first, text))
        else:
            found.extend(commands(block, first))
    for n, line in enumerate(lines, 1):
        if not line.startswith("    "):
            found.extend((n, m.group(1)) for m in re.finditer(r"`(curl [^`]+)`", line))
    return _in_contexts(doc, sorted((n, _runnable(text)) for n, text in found), lines)


SETUP = re.compile(r"-m venv\b|^\. \S+/bin/activate$|\bpip install\b")  # already done here


def _runnable(text: str) -> str:
    """A `setup && ... && start` chain (the README's first command) as the start it ends in:
    the environment it sets up is the one these tests run in."""
    *setup, last = [part.strip() for part in text.split(" && ")]
    if setup and all(SETUP.search(part) for part in setup) and START.match(last):
        return last
    return text


def _in_contexts(doc: str, found: list[tuple[int, str]], lines: list[str]) -> list[Example]:
    """Each example with the proxy it runs against: the last start command of its section."""
    sections = [n for n, line in enumerate(lines, 1) if line.startswith("## ")]
    starts = [(n, text) for n, text in found if START.match(text) and not _skip(text)]
    default = DEFAULT_START[doc] or (starts[0][1] if starts else "")
    out = []
    for n, text in found:
        section = max((s for s in sections if s <= n), default=0)
        here = [t for m, t in starts if section <= m <= n]
        out.append(Example(doc, n, text, here[-1] if here else default))
    return out


def _skip(text: str) -> str | None:
    return next((reason for pattern, reason in SKIPS if re.search(pattern, text, re.M)), None)


EXAMPLES = [example for doc in DOCS for example in examples(doc)]


# ---- running them ------------------------------------------------------------------------------

class Proxy:
    """A proxy started from a documented command, as written (plus loopback, port 0)."""

    def __init__(self, command: str, scratch: Path) -> None:
        words = shlex.split(command, comments=True)
        assigned = {}
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            assigned[name] = value
        self.env = {**os.environ, "PW_PORT": "0", "PW_BIND_ADDRESS": "127.0.0.1",
                    "PW_AUTH_PATH": str(scratch), "NO_PROXY": "127.0.0.1,localhost", **assigned}
        self.assigned = assigned
        self.output: list[str] = []
        self.proc = subprocess.Popen(["bash", "-c", "exec " + shlex.join(words)], cwd=ROOT, env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._listening = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(COMMAND_WAIT):
            self.stop()
            raise AssertionError(f"{command!r} never said where it listens:\n" + "".join(self.output))
        self._wait_healthy(command)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if len(self.output) < 200:
                self.output.append(line)
            found = re.search(r"listening on (http://[^/\s]+)/", line)
            if found and not self.url:
                self.url = found.group(1).replace("0.0.0.0", "127.0.0.1")
                self._listening.set()

    def _wait_healthy(self, command: str) -> None:
        deadline = time.monotonic() + COMMAND_WAIT
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{command!r} never became healthy:\n" + "".join(self.output))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Proxies:
    """The proxies of the documents' start commands: one per command, started on first use."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.running: dict[str, Proxy] = {}

    def get(self, command: str) -> Proxy:
        key = shlex.join(shlex.split(command, comments=True))  # the same command, commented or not
        if key not in self.running:
            folder = self.scratch / str(len(self.running))
            folder.mkdir()
            self.running[key] = Proxy(key, folder)
        return self.running[key]

    def stop(self) -> None:
        for proxy in self.running.values():
            proxy.stop()


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxies]:
    started = Proxies(tmp_path_factory.mktemp("documented"))
    yield started
    started.stop()


def run(text: str, proxy: Proxy) -> tuple[bool, str]:
    """Run one command against `proxy`; (worked, what it printed)."""
    host = proxy.url.removeprefix("http://")
    script = CURL + DOCUMENTED.sub(host, text)
    stream = bool(re.search(r"curl\b.*\s-N\s", text + " "))
    proc = subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=proxy.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not stream:
            out, _ = proc.communicate(timeout=COMMAND_WAIT)
            return proc.returncode == 0, out
        return _first_event(proc)
    finally:
        _end(proc)
        proc.wait()


def _end(proc: subprocess.Popen[str]) -> None:
    """End the session this test started for one command (bash and what it runs)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)


def _first_event(proc: subprocess.Popen[str]) -> tuple[bool, str]:
    assert proc.stdout is not None
    seen: list[str] = []
    timer = threading.Timer(STREAM_WAIT, _end, (proc,))
    timer.start()
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("data: {"):
                return True, "".join(seen)
    finally:
        timer.cancel()
    return False, "".join(seen)


# ---- the tests -------------------------------------------------------------------------------

def test_the_documents_show_what_they_should() -> None:
    """The extraction itself: a test that found nothing would pass for nothing."""
    texts = [e.text for e in EXAMPLES]
    assert sum(t.startswith("curl ") for t in texts) >= 10, texts
    assert "PW_CONTROL_SECRET=demo python3 -m proxy --simulate" in texts  # the quick start
    assert any("events?gw=sim2" in t for t in texts)
    assert sum(t.startswith("scrape_configs:") for t in texts) == 2  # Docker and a plain host
    readme = (ROOT / "README.md").read_text()
    for words in ("python3 -m venv", "PW_BIND_ADDRESS=127.0.0.1", "PW_STYLE", "every interface",
                  "python3 -m pytest -q tests/"):
        assert words in readme, words
    for example in EXAMPLES:
        if example.text.startswith("curl "):
            assert example.start, f"{example.id}: no proxy to run against"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_documented_example_works(example: Example, proxies: Proxies, tmp_path: Path) -> None:
    reason = _skip(example.text)
    if reason:
        pytest.skip(f"{reason}: {example.text.splitlines()[0]}")
    if example.text.startswith("scrape_configs:"):
        _check_prometheus(example.text, tmp_path)
    elif START.match(example.text):
        proxy = proxies.get(example.text)  # it starts, and its gateways connect
        assert proxy.proc.poll() is None
    elif RUNNABLE.match(example.text + " "):
        proxy = proxies.get(example.start)
        worked, out = run(example.text, proxy)
        assert worked, f"{example.id}: {example.text}\n(against {example.start})\n{out}"
    else:
        pytest.fail(f"{example.id}: not a command this test knows how to run, nor a known "
                    f"skip: decide in tests/test_doc_examples.py\n{example.text}")


def _check_prometheus(snippet: str, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found (Debian's prometheus; tests/run.sh installs it)")
    config = tmp_path / "prometheus.yml"
    config.write_text(snippet + "\n")
    checked = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                             text=True, timeout=COMMAND_WAIT)
    assert checked.returncode == 0, checked.stdout + checked.stderr
