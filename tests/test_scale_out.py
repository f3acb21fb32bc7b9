"""Folder runs over many processes: torchrun (gloo on CPU), --shard I/N, claims, crashes and `restore report`.

Every output file and metric must equal a one-process run's bit for bit on CPU, whatever the number of
processes: each image keeps its index and so its seeds. Processes here are real (`torchrun`, or plain
subprocesses for --shard), on a tiny prior and five 16×16 images.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from restore.errors import RestoreError
from restore.io import write_image
from restore.shard import Shard, claim, release, stale

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture
def five(tmp_path) -> Path:
    folder = tmp_path / "in"
    for i in range(5):
        write_image(folder / f"im{i}.png", torch.rand((3, 16, 16), generator=torch.Generator().manual_seed(i)) * 2 - 1)
    return folder


def command(folder: Path, out: Path, prior: str, *extra: str, steps: int = 2) -> list[str]:
    return ["inpaint", str(folder), "--mask", "random:0.5", "--prior", prior, "--steps", str(steps), "--precision", "fp32",
            "--out", str(out), "--quiet", *extra]


def digests(out: Path) -> dict[str, str]:
    """Every output file's SHA-256 (records and reports aside, which hold timings)."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*"))
            if p.is_file() and ".records" not in p.parts and not p.name.startswith("report")}


def metrics(out: Path) -> dict[str, tuple]:
    return {r["name"]: (r["psnr"], r["ssim"], r["nfe"]) for r in json.loads((out / "report.json").read_text())["images"]}


def run_at_once(commands: list[list[str]]) -> None:
    """``python -m restore`` with each argument list, all started together; each must succeed."""
    processes = [subprocess.Popen([sys.executable, "-m", "restore", *c], cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True)
                 for c in commands]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read()


def torchrun_two(args: list[str]) -> None:
    """``torchrun --standalone --nproc-per-node 2 -m restore`` with ``args``; it must succeed."""
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "restore", *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_shards_split_by_index_with_no_padding_and_no_duplicates():
    items = list("abcdefg")
    parts = [Shard(i, 3).items(items) for i in range(3)]
    assert [[i for i, _ in p] for p in parts] == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(i for p in parts for i, _ in p) == list(range(7))
    assert Shard.parse("2/5") == Shard(2, 5)
    for bad in ("5/5", "-1/3", "1", "a/b", "1/0"):
        with pytest.raises(RestoreError, match="--shard must be I/N"):
            Shard.parse(bad)


def test_claims_exclude_a_second_process_and_expire_with_it(tmp_path):
    record = tmp_path / ".records" / "a.json"
    mine = claim(record)
    assert mine is not None and mine.is_file()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        held = json.loads(mine.read_text())
        mine.write_text(json.dumps({**held, "pid": other.pid}))  # as if that live process held it
        assert not stale(mine) and claim(record) is None
    finally:
        other.kill()
        other.wait()
    assert stale(mine)  # its process is gone: taken over
    again = claim(record)
    assert again is not None
    release(again)
    assert not again.exists()


def test_shard_out_of_range_is_one_clear_line(five, tiny_prior, tmp_path):
    result = CliRunner().invoke(app, command(five, tmp_path / "o", tiny_prior, "--shard", "2/2"))
    assert result.exit_code == 1 and "--shard must be I/N with 0 <= I < N, got 2/2" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_two_shards_equal_one_process_bit_for_bit(five, tiny_prior, tmp_path):
    single, split = tmp_path / "one", tmp_path / "two"
    assert CliRunner().invoke(app, command(five, single, tiny_prior)).exit_code == 0
    run_at_once([command(five, split, tiny_prior, "--shard", f"{i}/2") for i in range(2)])
    assert CliRunner().invoke(app, ["report", str(split), "--quiet"]).exit_code == 0
    assert digests(split) == digests(single) and len(digests(single)) == 10  # 5 restorations, 5 measurements
    assert metrics(split) == metrics(single)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_and_rank_zero_reports(five, tiny_prior, tmp_path):
    single, launched = tmp_path / "one", tmp_path / "torchrun"
    assert CliRunner().invoke(app, command(five, single, tiny_prior)).exit_code == 0
    torchrun_two(command(five, launched, tiny_prior))
    assert digests(launched) == digests(single) and metrics(launched) == metrics(single)
    report = json.loads((launched / "report.json").read_text())
    assert sorted(r["name"] for r in report["images"]) == [f"im{i}" for i in range(5)]  # rank 0's, after both finished


@pytest.mark.slow
def test_a_killed_process_loses_one_image_and_a_rerun_with_another_count_completes(five, tiny_prior, tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "restore", *command(five, out, tiny_prior, "--shard", "0/2", steps=400)],
                             cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True)
    start = time.time()
    while not list((out / ".records").glob("*.json")):  # its first image done, the second under way
        assert first.poll() is None and time.time() - start < 200, first.stderr.read() if first.poll() is not None else "slow"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = {p.stem for p in (out / ".records").glob("*.json")}
    partial = CliRunner().invoke(app, ["report", str(out), "--json"])  # a crashed run's folder, reported
    assert partial.exit_code == 0 and {r["name"] for r in json.loads(partial.stdout)["images"]} == done_before
    shards = [subprocess.Popen([sys.executable, "-m", "restore", *command(five, out, tiny_prior, "--shard", f"{i}/3", "--json",
                                                                     steps=400)],
                               cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    restored: list[str] = []
    reports = []
    for process in shards:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        reports.append([(r["name"], r["status"]) for r in json.loads(stdout)["images"]])
        restored += [r["name"] for r in json.loads(stdout)["images"] if r["status"] == "ok"]
    assert sorted(restored + sorted(done_before)) == [f"im{i}" for i in range(5)], (done_before, reports)  # each once
    assert not list((out / ".records").glob("*.claim"))


@pytest.mark.slow
def test_two_commands_at_once_on_one_folder_share_the_work(five, tiny_prior, tmp_path):
    out = tmp_path / "out"
    runs = [subprocess.Popen([sys.executable, "-m", "restore", *command(five, out, tiny_prior, "--json", steps=200)],
                             cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    done = []
    for process in runs:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        done.append({r["name"] for r in json.loads(stdout)["images"] if r["status"] == "ok"})
    assert not done[0] & done[1] and done[0] | done[1] == {f"im{i}" for i in range(5)}


def bench_command(folder: Path, out: Path, prior: str, *extra: str) -> list[str]:
    return ["bench", str(folder), "--tasks", "sr4,denoise", "--samplers", "dpir", "--prior", prior, "--steps", "2",
            "--size", "16", "--precision", "fp32", "--out", str(out), "--quiet", *extra]


def bench_rows(out: Path) -> dict[tuple, tuple]:
    import csv

    with open(out / "results.csv", newline="") as f:
        return {(r["task"], r["method"], r["image"]): (r["status"], r["psnr"], r["ssim"], r["nfe"]) for r in csv.DictReader(f)}


@pytest.mark.slow
def test_bench_shards_merge_to_the_one_process_results(five, tiny_prior, tmp_path):
    single, split = tmp_path / "one", tmp_path / "two"
    assert CliRunner().invoke(app, bench_command(five, single, tiny_prior)).exit_code == 0
    run_at_once([bench_command(five, split, tiny_prior, "--shard", f"{i}/2") for i in range(2)])
    assert sorted(p.name for p in split.glob("results.part*.csv")) == ["results.part0of2.csv", "results.part1of2.csv"]
    assert not (split / "summary.md").exists()  # no shard knows the others are done
    result = CliRunner().invoke(app, ["report", str(split), "--quiet"])
    assert result.exit_code == 0, result.output
    assert bench_rows(split) == bench_rows(single) and len(bench_rows(single)) == 5 * 2 * 2  # images × tasks × methods
    assert not list(split.glob("results.part*.csv")) and (split / "summary.md").is_file()
    pictures = sorted(p.name for p in split.glob("*.png"))
    assert pictures == sorted(p.name for p in single.glob("*.png")) == ["denoise.png", "sr4.png"]
    # a rerun in one process resumes from the merged rows: nothing left to do
    again = CliRunner().invoke(app, bench_command(five, split, tiny_prior, "--json"))
    assert again.exit_code == 0 and bench_rows(split) == bench_rows(single)


@pytest.mark.slow
def test_bench_under_torchrun_rank_zero_merges_and_reports(five, tiny_prior, tmp_path):
    single, launched = tmp_path / "one", tmp_path / "torchrun"
    assert CliRunner().invoke(app, bench_command(five, single, tiny_prior)).exit_code == 0
    torchrun_two(bench_command(five, launched, tiny_prior))
    assert bench_rows(launched) == bench_rows(single) and (launched / "summary.md").is_file()
    assert not list(launched.glob("results.part*.csv"))


def test_an_image_another_live_process_is_writing_does_not_stop_a_second_shard(tmp_path):
    """Shard 2 starts while shard 1 is between writing an image and writing its record: the image's live claim
    says restore is writing it, so the check before any work lets it be (it refused it once, under load in CI);
    without a claim, or with a dead process's, the same file is refused."""
    from restore.runner import check_outputs, output_paths

    inputs = [tmp_path / "in" / "a.png"]
    write_image(inputs[0], torch.zeros(3, 8, 8))
    out = tmp_path / "out"
    paths = output_paths(out, "a")
    write_image(paths["restoration"], torch.zeros(3, 8, 8))
    with pytest.raises(RestoreError, match="has no record of writing it"):
        check_outputs(out, inputs)
    holder = {"host": __import__("socket").gethostname(), "time": time.time()}
    claim_file = paths["record"].with_suffix(".claim")
    claim_file.parent.mkdir(parents=True, exist_ok=True)
    claim_file.write_text(json.dumps({**holder, "pid": os.getppid()}))  # alive, and not this process
    check_outputs(out, inputs)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claim_file.write_text(json.dumps({**holder, "pid": dead.pid}))
    with pytest.raises(RestoreError, match="has no record of writing it"):
        check_outputs(out, inputs)
