"""Every README example is a promise: this runs each of them, in the README's order, in a scratch copy of the
repository's sample data, and checks that it succeeds and writes what the README says.

What is run: every command in an indented code block, every example of the Commands table, every full command
quoted in the prose (placeholders such as IMG or NAME mark a pattern, not an example), and the Python snippet.
Where the README's settings would take minutes, the run uses a tiny random prior and 1–2 steps (task commands),
a stand-in ../shared holding two small photographs per split (training, patch-GMM fit and bench run on those;
the real ../shared need not exist), a one-image suite (bench) and a minute of fitting at most —
the commands, options and paths themselves are the README's.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from restore.io import list_images, write_image

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TASKS = ("inpaint", "deblur", "superres", "denoise", "colorize", "mri", "ct", "dejpeg", "phase")
#: the README's slow settings and what the test runs instead
FASTER = [
    (r"--minutes 80\b", "--steps 2"),
    (r"--anneal-to 18800\b", "--anneal-to 4"),
    (r"--minutes 8\.5\b", "--minutes 0.01"),
    (r"--minutes 75\b", "--minutes 0.01"),
    (r"--limit 10\b", "--limit 1 --size 64 --tasks sr4,denoise --steps 1"),
]


def readme_commands() -> list[str]:
    """The commands of the README, in order, continuation lines joined."""
    commands = []
    block = re.findall(r"(?m)^(    \S.*(?:\n    .*)*)", README)
    for chunk in block:
        text = re.sub(r"\\\n\s*", " ", chunk)
        for line in text.splitlines():
            line = line.strip()
            if line.startswith(("restore ", "python ", "python3 ", ". .venv", "torchrun ")):
                commands.append(line)
    for row in re.findall(r"(?m)^\| `restore [^|]*\|[^|]*\| `([^`]+)` \|", README):
        commands.append(row)
    for quoted in re.findall(r"`((?:restore|python -m) [^`]+)`", README):
        mention = len(quoted.split()) < 3 or " / " in quoted  # `restore train`, `restore priors list / info`
        if not mention and not re.search(r"\b[A-Z]{2,}\b", quoted) and quoted not in commands and "\n" not in quoted:
            commands.append(quoted)
    order = {c: README.find(c if not c.startswith(("restore train", "restore bench")) else c.split(" --")[0]) for c in commands}
    return sorted(dict.fromkeys(commands), key=lambda c: order[c] if order[c] >= 0 else len(README))


def test_the_readme_has_the_examples_this_file_runs():
    commands = readme_commands()
    assert sum(c.startswith("restore ") for c in commands) >= 15, commands
    assert any("restore metrics restored/ sample_data/images" in c for c in commands)
    assert any(c.startswith("python3 -m venv") for c in commands) and any("pytest" in c for c in commands)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, tiny_prior) -> Path:
    """A working folder like the repository's root: sample_data, the validation split list, training images."""
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "sample_data", root / "sample_data")
    (root / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / "val_split.txt", root / "benchmarks")
    (root / "restore" / "prior" / "weights").mkdir(parents=True)
    shared = root.parent / "shared" / "datasets" / "bsds500"  # what ../shared means from the scratch folder
    for split in ("train", "test"):
        for i in range(2):
            write_image(shared / split / f"p{i}.png", torch.rand((3, 64, 64), generator=torch.Generator().manual_seed(i)) * 2 - 1)
    return root


def runnable(command: str, scratch: Path, prior: str) -> list[str] | None:
    """The command's arguments as the test runs it, or None for the shell lines CI itself runs."""
    if command.startswith((". .venv", "python3 -m venv")):
        if "restore inpaint" not in command:
            return None  # `python -m pytest`: this suite itself
        command = command[command.index("restore inpaint"):]  # the install is what CI does before the tests
    for slow, fast in FASTER:
        command = re.sub(slow, fast, command)
    args = shlex.split(command)
    task = args[args.index("restore") + 1] if args[0] == "torchrun" else args[1] if args[0] == "restore" else None
    if task in TASKS + ("bench",):
        args += ["--prior", prior, "--quiet"]
        if task in TASKS and "--steps" not in args:
            args += ["--steps", "1"]
    return args


def array_jobs(command: str) -> list[str]:
    """A SLURM array's command as each of its jobs runs it (``$SLURM_ARRAY_TASK_ID/N``: jobs 0 … N-1), else itself."""
    found = re.search(r"\$SLURM_ARRAY_TASK_ID/(\d+)", command)
    if not found:
        return [command]
    return [command.replace("$SLURM_ARRAY_TASK_ID", str(i)) for i in range(int(found.group(1)))]


def test_every_readme_command_runs_as_written(scratch, tiny_prior, one_thread):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    assert (scratch.parent / "shared").is_dir()
    ran = 0
    for command in readme_commands():
        started = time.time()
        for job in array_jobs(command):
            args = runnable(job, scratch, tiny_prior)
            if args is None:
                continue
            os.chdir(scratch)
            try:
                if args[0] == "restore":
                    result = CliRunner().invoke(app, args[1:])
                    assert result.exit_code == 0, f"{job}\n{result.stderr}{result.stdout}"
                else:  # python -c / python -m / torchrun, as a shell would run it
                    program = [sys.executable, "-m", "torch.distributed.run"] if args[0] == "torchrun" else [sys.executable]
                    done = subprocess.run([*program, *args[1:]], cwd=scratch, env=env, capture_output=True, text=True, timeout=300)
                    assert done.returncode == 0, f"{job}\n{done.stderr}"
            finally:
                os.chdir(ROOT)
        if args is None:
            continue
        if args[0] in ("restore", "torchrun"):  # after every job of an array
            check_outputs(args[args.index("restore"):], scratch)
        print(f"{time.time() - started:6.1f} s  {command}")
        ran += 1
    assert ran >= 18


def check_outputs(args: list[str], scratch: Path) -> None:
    """A task command wrote a restoration per input and the reports; the quick start's folder has all five."""
    if args[1] not in TASKS:
        return
    inputs = list_images(scratch / args[2], (".png", ".npy", ".npz", ".h5"))
    out = scratch / args[args.index("--out") + 1] if "--out" in args else (
        (scratch / args[2]).parent / "restored" if (scratch / args[2]).is_file() else (scratch / args[2]).parent / "restored")
    for path in inputs:
        assert (out / f"{path.stem}.png").is_file(), (args, path)
    assert (out / "report.csv").is_file() and (out / "report.json").is_file()


def test_the_python_snippet_runs(tmp_path, monkeypatch):
    code = re.search(r"## Python\n\n```python\n(.*?)```", README, re.S).group(1)
    shutil.copytree(ROOT / "sample_data", tmp_path / "sample_data")
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(2)
    namespace: dict = {}
    exec(compile(code, "README.md (Python)", "exec"), namespace)  # noqa: S102 - the README's own code
    assert (tmp_path / "astronaut_x4.png").is_file()
    assert namespace["plan"].nfe == 2 * namespace["plan"].steps and namespace["result"].mean.shape == (1, 3, 256, 256)


def test_every_picture_and_script_the_readme_names_is_in_the_repository():
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    scripts = re.findall(r"`python (docs/\S+\.py)`", README)
    assert pictures and scripts
    for path in pictures + scripts:
        assert (ROOT / path).is_file(), path
