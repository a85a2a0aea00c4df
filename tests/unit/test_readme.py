"""Everything the README tells a user to run exists: make targets, recops subcommands and
their flags, hack/ scripts and their verbs, linked files; the troubleshooting table names
exactly the condition reasons the API defines; the resource tables name real spec fields."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from recops.api import conditions
from recops.api.finetunejob import FineTuneJobSpec
from recops.api.monitorpolicy import MonitorPolicySpec
from recops.api.recmodeldeployment import RecModelDeploymentSpec
from recops.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def shown_commands() -> list[str]:
    """Command lines from the fenced code blocks and the inline code spans."""
    lines: list[str] = []
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", README, re.S):
        joined = block.replace("\\\n", " ")
        lines += [line.split("#")[0].strip() for line in joined.splitlines()]
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    lines += [span.strip() for span in re.findall(r"`([^`\n]+)`", prose)]
    return [line for line in lines if line]


def commands_of(program: str) -> list[list[str]]:
    found = []
    for line in shown_commands():
        for part in re.split(r"&&|;|\|", line):
            words = part.replace('"', " ").replace("$(", " ").replace(")", " ").split()
            for i, word in enumerate(words):
                if word == program or (word.endswith("/" + program) and program.startswith("hack/")):
                    found.append(words[i:])
    return found


def test_the_readme_shows_commands_at_all() -> None:
    assert commands_of("make") and commands_of("recops") and commands_of("hack/cluster")


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return {m for line in text.splitlines() for m in re.findall(r"^([a-zA-Z][\w-]*)\s*:(?!=)", line)}


def test_every_make_target_shown_exists() -> None:
    targets = make_targets()
    shown = {words[1] for words in commands_of("make") if len(words) > 1 and re.fullmatch(r"[a-z][\w-]*", words[1])}
    assert {"demo", "test", "demo-down"} <= shown
    assert shown <= targets, sorted(shown - targets)


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


def test_every_recops_subcommand_and_flag_shown_exists() -> None:
    root = build_parser()
    checked = 0
    for words in commands_of("recops"):
        if len(words) < 2 or not re.fullmatch(r"[a-z][\w-]*", words[1]):
            continue  # "recops" in prose, not a command
        commands = subparsers(root)
        assert words[1] in commands, f"`recops {words[1]}` is not a subcommand: {' '.join(words)}"
        parser = commands[words[1]]
        rest = words[2:]
        if rest and subparsers(parser) and not rest[0].startswith("-"):
            assert rest[0] in subparsers(parser), f"`recops {words[1]} {rest[0]}` does not exist"
            parser = subparsers(parser)[rest[0]]
            rest = rest[1:]
        for flag in (w.split("=")[0] for w in rest if w.startswith("--")):
            assert flag in options(parser), f"`{flag}` is not a flag of {' '.join(words[:2])}"
        checked += 1
    assert checked >= 3


def test_every_hack_script_and_verb_shown_exists() -> None:
    cluster_help = subprocess.run([sys.executable, str(REPO / "hack" / "cluster"), "--help"], capture_output=True,
                                  text=True, check=True).stdout
    verbs = set(re.search(r"\{([\w,]+)\}", cluster_help).group(1).split(","))  # type: ignore[union-attr]
    for words in commands_of("hack/cluster"):
        if len(words) > 1 and not words[1].startswith("-"):
            assert words[1] in verbs, words
    for script in set(re.findall(r"hack/[\w.-]+", README)):
        assert (REPO / script).exists(), script
    demo_help = subprocess.run([sys.executable, str(REPO / "hack" / "demo.py"), "--help"], capture_output=True,
                               text=True, check=True).stdout
    for verb in ("up", "down"):
        assert verb in demo_help
    up_help = subprocess.run([sys.executable, str(REPO / "hack" / "demo.py"), "up", "--help"], capture_output=True,
                             text=True, check=True).stdout
    assert "--fast" in up_help


def test_every_linked_file_exists() -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith("http"):
            assert (REPO / target).exists(), target


def defined_reasons() -> set[str]:
    types = {"COMPLETE", "FAILED", "GATE_PASSED", "OPTIMIZED", "SUSPENDED", "READY", "AVAILABLE", "PROGRESSING", "DEGRADED",
             "HEALTHY", "RETRAINING", "METRICS_UNAVAILABLE"}
    return ({v for k, v in vars(conditions).items() if k.isupper() and isinstance(v, str) and k not in types}
            | set(conditions.CONTAINER_START_FAILURES))  # the kubelet's reasons, passed through


def test_troubleshooting_names_exactly_the_defined_reasons() -> None:
    section = README.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    first_cells = [row.split("|")[1] for row in section.splitlines() if row.startswith("| `")]
    documented = {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}
    assert defined_reasons() - documented == set(), "reasons without a troubleshooting row"
    assert documented - defined_reasons() == set(), "rows for reasons the API does not define"


def field_names(model: type[BaseModel], seen: set[type] | None = None) -> set[str]:
    """Every field alias of the model and of the models nested in it."""
    seen = seen or set()
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(info.alias or name)
        stack = [info.annotation]
        while stack:
            current = stack.pop()
            if isinstance(current, type) and issubclass(current, BaseModel) and current not in seen:
                seen.add(current)
                names |= field_names(current, seen)
            stack += list(getattr(current, "__args__", ()) or ())
    return names


@pytest.mark.parametrize("kind,spec", [("FineTuneJob", FineTuneJobSpec), ("RecModelDeployment", RecModelDeploymentSpec),
                                       ("MonitorPolicy", MonitorPolicySpec)])
def test_resource_tables_name_real_fields(kind: str, spec: type[BaseModel]) -> None:
    section = README.split(f"\n## {kind}\n", 1)[1].split("\n## ", 1)[0]
    rows = [row.split("|")[1] for row in section.splitlines() if row.startswith("| `")]
    shown = {part for cell in rows for name in re.findall(r"`([\w.]+)`", cell) for part in name.split(".")}
    assert shown, kind
    known = field_names(spec)
    assert shown - known == set(), f"{kind}: the README names fields the API lacks"
    top = {info.alias or name for name, info in spec.model_fields.items()}
    assert top <= shown, f"{kind}: spec fields missing from the README: {sorted(top - shown)}"
