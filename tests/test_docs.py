"""The documentation names only what exists.

Every command option, Python name and repository path that README.md and docs/*.md mention must
resolve: an option the command's parser has (with the choices it lists), a module or attribute that
imports, a file that is there. Parsers are read without running a command: its `--help` is caught
before argparse prints it, and every complete command of a code block is parsed by its own parser.
"""
import argparse
import bisect
import configparser
import functools
import json
import importlib
import os
import re
import runpy
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import mock

import pytest

from conftest import REPO

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
PACKAGE = REPO / "mmder_tf"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
_SPAN = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
_SHELL_BLOCKS = ("bash", "sh", "shell", "console")  # complete commands, parsed whole
_PLAIN_BLOCKS = ("", "text")  # diagrams and outputs: options checked, not parsed whole
# Command separators in shell code (a bare `|` inside a token, `a|b`, lists choices).
_SEPARATOR = re.compile(r"\s(?:&&|\|\||\||;)\s|\n")
_ABSOLUTE_NAME = re.compile(r"(?<![\w/.\-\"'])mmder_tf(?:\.\w+)+")
_FILE_SUFFIXES = {"json", "md", "py", "h5", "csv", "png", "pth", "txt", "yml", "yaml", "toml", "cfg", "mp4", "flv",
                  "wav", "m4a", "mp3", "ipynb", "safetensors", "lock", "MOV", "mov", "jpg", "pb", "tfrecord"}


# ----------------------------------------------------------------------------- what the documents say


def shown(path: Path) -> str:
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


class Snippet:
    """One piece of code in a document: a fenced block or an inline span, and the section it is in."""

    def __init__(self, doc: Path, text: str, fenced: bool, language: str, section: int):
        self.doc, self.text, self.fenced, self.language, self.section = doc, text, fenced, language, section

    def where(self):
        return f"{shown(self.doc)}: {self.text.strip().splitlines()[0][:100]!r}"


def snippets(doc: Path, text: str | None = None):
    """The code of a document in reading order, and its prose (fenced code blanked out)."""
    text = doc.read_text() if text is None else text
    prose = _FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    headings = [m.start() for m in re.finditer(r"^#{1,6} ", prose, re.M)]
    found = [(m.start(), Snippet(doc, m.group(2), True, m.group(1), bisect.bisect(headings, m.start())))
             for m in _FENCE.finditer(text)]
    found += [(m.start(), Snippet(doc, m.group(1), False, "", bisect.bisect(headings, m.start())))
              for m in _SPAN.finditer(prose)]
    return [snippet for _, snippet in sorted(found, key=lambda pair: pair[0])], prose


def console_scripts() -> dict:
    """mmder-x -> "module:function", from the package metadata in the repository."""
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    scripts = {}
    if setup.has_option("options.entry_points", "console_scripts"):
        for line in setup.get("options.entry_points", "console_scripts").strip().splitlines():
            name, target = (part.strip() for part in line.split("=", 1))
            scripts[name] = target
    pyproject = REPO / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        scripts.update(tomllib.loads(pyproject.read_text()).get("project", {}).get("scripts", {}))
    return scripts


SCRIPTS = console_scripts()


def commands(snippet: Snippet):
    """(command, tokens) for each command in a snippet; command None: bare options (`--weights`, `--mode x`)."""
    if snippet.fenced and snippet.language not in _SHELL_BLOCKS + _PLAIN_BLOCKS:
        return
    text = snippet.text.replace("\\\n", " ")
    for part in _SEPARATOR.split(text):
        part = re.sub(r"(^|\s)#.*", "", part)  # shell comments
        tokens = [t.strip("[]") for t in part.split()]
        tokens = [t for t in tokens if t and t != "..."]
        if not tokens:
            continue
        if tokens[0] in SCRIPTS:
            yield tokens[0], tokens[1:]
        elif tokens[:2] == ["python", "-m"] and len(tokens) > 2 and re.fullmatch(r"mmder_tf[\w.]*", tokens[2]):
            yield tokens[2], tokens[3:]
        elif tokens[0] == "python" and len(tokens) > 1 and tokens[1].endswith(".py") and "/" in tokens[1]:
            yield tokens[1], tokens[2:]
        elif tokens[0].startswith("--") and not snippet.fenced:
            yield None, tokens


# ----------------------------------------------------------------------------- the commands' own parsers


class _Parsed(Exception):
    def __init__(self, parser):
        self.parser = parser


def _catch_help(action, parser, namespace, values, option_string=None):
    raise _Parsed(parser)


@functools.cache
def parser_of(command: str) -> argparse.ArgumentParser:
    """The parser a command builds: a console script, `python -m` module or script path, run up to
    the point where argparse would print --help."""
    # os.environ restored: a command's start may set variables (quiet TensorFlow) later tests must not see.
    with mock.patch.object(argparse._HelpAction, "__call__", _catch_help), mock.patch.dict(os.environ), \
            mock.patch.object(sys, "argv", [command, "--help"]), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: module already imported
        try:
            if command in SCRIPTS:
                module, function = SCRIPTS[command].split(":")
                getattr(importlib.import_module(module), function)()
            elif command.endswith(".py"):
                script = REPO / command
                assert script.is_file(), f"{command}: no such script"
                # as `python SCRIPT` does: the script's own folder first on sys.path (benchmarks import _smoke)
                with mock.patch.object(sys, "path", [str(script.parent), *sys.path]):
                    runpy.run_path(str(script), run_name="__main__")
            else:
                runpy.run_module(command, run_name="__main__", alter_sys=True)
        except _Parsed as caught:
            return caught.parser
        except SystemExit:
            pass
    raise AssertionError(f"{command} has no command line parser (no --help)")


def describe(requests: dict) -> dict:
    """For each command: its options ({option: choices or None}) and, for each complete command line
    given, None if its parser takes it or the parser's error; a command without a parser: its error."""
    table = {}
    for command, lines in requests.items():
        try:
            parser = parser_of(command)
        except (ImportError, AssertionError) as error:
            table[command] = {"error": str(error)}
            continue
        options = {option: None if action.choices is None else [str(c) for c in action.choices]
                   for option, action in parser._option_string_actions.items()}
        table[command] = {"options": options, "parses": [_parse_error(parser, line) for line in lines]}
    return table


class _Refused(Exception):
    pass


def _parse_error(parser, tokens):
    def refuse(message):
        raise _Refused(message)

    with mock.patch.object(parser, "error", refuse), mock.patch.object(parser, "exit", refuse):
        try:
            parser.parse_args(tokens)
        except _Refused as refused:
            return str(refused)
    return None


def described(requests: dict) -> dict:
    """describe() in a fresh process: running a command up to its --help imports what it imports and
    may set process-wide state (a benchmark pins TensorFlow to one thread), which the suite must not inherit."""
    result = subprocess.run([sys.executable, __file__], input=json.dumps(requests), capture_output=True,
                            text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _choice_problem(option, choices, value):
    """A value written after an option: `{a,b}` must be all its choices, `a|b` and `a` some of them."""
    if choices is None or not value or value.startswith("-"):
        return None
    if value.startswith("{") and value.endswith("}"):
        listed = value[1:-1].split(",")
        return None if set(listed) == set(choices) else f"{option} {value}: the choices are {{{','.join(choices)}}}"
    if "|" in value or value in choices or value.isidentifier():
        wrong = sorted({v for v in value.split("|") if v and v != "..."} - set(choices))
        return f"{option} {value}: {', '.join(wrong)} not among {sorted(choices)}" if wrong else None
    return None


def option_problems(docs) -> list:
    """Options of a command must be its own. A bare option (`--mode x`) is checked against the command
    last named in its section when that command has it (`mmder-finetune` options: ...), else against
    every command. Complete commands of shell blocks must parse (types, choices, required arguments)."""
    found = [(snippet, command, tokens) for doc in docs for snippet in snippets(doc)[0]
             for command, tokens in commands(snippet)]
    requests = {command: [] for command in SCRIPTS}
    for snippet, command, tokens in found:
        if command:
            requests.setdefault(command, [])
            if snippet.fenced and snippet.language in _SHELL_BLOCKS:
                requests[command].append(tokens)
    table = described(requests)
    problems = [f"{command}: no such command ({entry['error']})" for command, entry in table.items() if "error" in entry]
    options = {command: entry["options"] for command, entry in table.items() if "options" in entry}
    parses = {command: iter(entry["parses"]) for command, entry in table.items() if "parses" in entry}
    context = (None, None, None)  # (document, section, command named in its prose)
    for snippet, command, tokens in found:
        if command and command not in options:
            continue
        if command and not snippet.fenced:  # named in the prose, not run in an example
            context = (snippet.doc, snippet.section, command)
        named = context[2] if context[:2] == (snippet.doc, snippet.section) else None
        for i, token in enumerate(tokens):
            if not token.startswith("--"):
                continue
            option = token.split("=", 1)[0]
            value = token.split("=", 1)[1] if "=" in token else (tokens[i + 1] if i + 1 < len(tokens) else "")
            if command:
                candidates = [options[command]]
            elif named and option in options[named]:
                candidates = [options[named]]
            else:
                candidates = list(options.values())
            choices = [known[option] for known in candidates if option in known]
            if not choices:
                owner = f"{command} has no option" if command else "no command has the option"
                problems.append(f"{snippet.where()}: {owner} {option}")
                continue
            issues = [_choice_problem(option, c, value) for c in choices]
            if all(issues):
                problems.append(f"{snippet.where()}: {issues[0]}")
        if command and snippet.fenced and snippet.language in _SHELL_BLOCKS:
            error = next(parses[command])
            if error:
                problems.append(f"{snippet.where()}: {command} refuses it: {error}")
    return problems


# ----------------------------------------------------------------------------- Python names and paths


def resolve(name: str):
    """Import the longest module prefix of a dotted name, then follow attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as error:
            if error.name and not ".".join(parts[:cut]).startswith(error.name):
                raise  # a module that exists but fails to import its own dependency
            continue
        for attribute in parts[cut:]:
            target = getattr(target, attribute)
        return target
    raise ModuleNotFoundError(name)


def _package_tops():
    return {p.stem for p in PACKAGE.iterdir() if (p.suffix == ".py" or (p / "__init__.py").is_file())
            and not p.name.startswith("_")}


def python_names(doc: Path, text: str | None = None) -> set:
    """mmder_tf.x.y anywhere; x.y (x a module of the package) and x/y.z in inline code."""
    found, prose = snippets(doc, text)
    names = set(_ABSOLUTE_NAME.findall(prose))
    tops = _package_tops()
    for snippet in found:
        if snippet.fenced:
            names.update(_ABSOLUTE_NAME.findall(snippet.text))
            if snippet.language == "python":
                for module, imported in re.findall(r"^\s*from (mmder_tf[\w.]*) import ([\w, ]+)", snippet.text, re.M):
                    names.update(f"{module}.{n.strip()}" for n in imported.split(","))
            continue
        for token in re.findall(r"[\w./]+", snippet.text):
            token = token.rstrip(".")
            last = token.rsplit("/", 1)[-1]
            if "." not in last or last.rsplit(".", 1)[1] in _FILE_SUFFIXES:
                continue
            dotted = token.replace("/", ".")
            if dotted.split(".")[0] in tops and not dotted.startswith("mmder_tf"):
                names.add("mmder_tf." + dotted)
    return {n.rstrip(".") for n in names}


def name_problems(docs) -> list:
    problems = []
    for doc in docs:
        for name in sorted(python_names(doc)):
            try:
                resolve(name)
            except (ImportError, AttributeError) as error:
                problems.append(f"{shown(doc)}: {name} does not resolve ({error})")
    return problems


def repository_paths(doc: Path, text: str | None = None) -> set:
    """Paths into the repository: link targets, and inline-code paths under a top-level folder of the
    repository or the package (`mmder_tf/media/face.py`, `media/face.py`, `tests/x.py::test_y`)."""
    text = doc.read_text() if text is None else text
    found, prose = snippets(doc, text)
    paths = set()
    for target in _LINK.findall(_SPAN.sub("`code`", prose)):  # `f["x"](y)` in code is no link
        if not re.match(r"^([a-z][a-z0-9+.-]*:|#)", target):
            paths.add((doc.parent / target.split("#")[0]).resolve())
    roots = {p.name for p in REPO.iterdir() if not p.name.startswith(".git")} - {"shared", "site"}
    tops = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("_")}
    for snippet in found:
        if snippet.fenced:
            continue
        for token in re.findall(r"[\w.*/:-]+", snippet.text):
            token, _, test = token.partition("::")
            first, _, rest = token.partition("/")
            last = token.rstrip("/").rsplit("/", 1)[-1]
            checked = token.endswith("/") or ("." in last and last.rsplit(".", 1)[1] in _FILE_SUFFIXES)
            if not rest or not checked:
                if first in roots and not rest and "." in first and first.rsplit(".", 1)[1] in _FILE_SUFFIXES:
                    paths.add(REPO / first)  # README.md, setup.cfg, mkdocs.yml
                continue
            base = REPO if first in roots else PACKAGE if first in tops else None
            if base is None:
                continue
            paths.add((base / token, test) if test else base / token)
    return paths


def path_problems(docs) -> list:
    problems = []
    for doc in docs:
        for entry in sorted(repository_paths(doc), key=str):
            path, test = entry if isinstance(entry, tuple) else (entry, "")
            where = f"{shown(doc)}: {shown(path)}"
            if "*" in path.name:
                if not list(path.parent.glob(path.name)) and not list(PACKAGE.rglob(path.name)):
                    problems.append(f"{where}: nothing matches")
            elif not path.exists():
                problems.append(f"{where}: no such file")
            elif test and not re.search(rf"^\s*def {re.escape(test)}\(", path.read_text(), re.M):
                problems.append(f"{where}: no test {test}")
    return problems


# ----------------------------------------------------------------------------- the tests


def test_every_command_option_exists():
    problems = option_problems(DOC_FILES)
    assert not problems, "\n".join(problems)


def test_every_python_name_resolves():
    problems = name_problems(DOC_FILES)
    assert not problems, "\n".join(problems)


def test_every_repository_path_exists():
    problems = path_problems(DOC_FILES)
    assert not problems, "\n".join(problems)


def test_the_checks_fail_on_wrong_names(tmp_path):
    doc = tmp_path / "wrong.md"
    doc.write_text(
        "Run `mmder-finetune --strategy fslf --no-such-option` or `--preset {tiny,small,base,large,huge}`;\n"
        "`--no-such-flag`;\n"
        "`--strategy cfas|nope`. See `mmder_tf.fusion.clip.no_such_function`, `fusion.nowhere.fuse`\n"
        "and `mmder_tf/media/no_such_file.py`, `tests/test_docs.py::test_nothing`, [x](no_such_page.md).\n\n"
        "```bash\npython -m mmder_tf.finetune --strategy nope\npython -m mmder_tf.no_such_command --x\n```\n")
    options = "\n".join(option_problems([doc]))
    assert "mmder-finetune has no option --no-such-option" in options
    assert "no command has the option --no-such-flag" in options
    assert "--preset {tiny,small,base,large,huge}: the choices are" in options  # mmder-finetune's, named before
    assert "nope not among" in options
    assert "refuses it" in options
    assert "mmder_tf.no_such_command: no such command" in options
    names = "\n".join(name_problems([doc]))
    assert "mmder_tf.fusion.clip.no_such_function does not resolve" in names
    assert "mmder_tf.fusion.nowhere.fuse does not resolve" in names
    paths = "\n".join(path_problems([doc]))
    assert "no_such_file.py: no such file" in paths
    assert "no test test_nothing" in paths
    assert "no_such_page.md: no such file" in paths


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_every_console_script_is_documented(command):
    text = "\n".join(doc.read_text() for doc in DOC_FILES)
    assert command in text, f"{command} is installed but no page of the documentation names it"


if __name__ == "__main__":  # described(): the commands' parsers, read in a process of their own
    print(json.dumps(describe(json.loads(sys.stdin.read()))))
