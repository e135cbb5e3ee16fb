"""``finetune-gateway jobs ...`` and ``files upload`` in a real pseudo-terminal (pexpect),
against a gateway in front of the fake OpenAI, the job moved through its states by the test.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from gateway.console.progress import Training, sparkline
from tests.conftest import GATEWAY_KEY, Stack

CLI = [sys.executable, "-m", "gateway"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def terminal(stack: Stack) -> Iterator[list[pexpect.spawn]]:
    spawned: list[pexpect.spawn] = []
    yield spawned
    for child in spawned:
        child.close(force=True)


def spawn(
    stack: Stack, spawned: list[pexpect.spawn], *args: str, columns: int = 100
) -> pexpect.spawn:
    env = {**os.environ, "OPENAI_BASE_URL": stack.gateway_url, "OPENAI_API_KEY": GATEWAY_KEY}
    env.update({"TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": "30"})
    child = pexpect.spawn(
        CLI[0], [*CLI[1:], *args], env=env, encoding="utf-8", dimensions=(30, columns), timeout=20
    )
    spawned.append(child)
    return child


def create_job(stack: Stack) -> str:
    client = stack.client()
    training = client.files.create(file=("t.jsonl", b'{"messages": []}\n'), purpose="fine-tune")
    return client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training.id).id


def metrics(stack: Stack, job_id: str, step: int, total: int, loss: float) -> None:
    stack.upstream.add_event(
        job_id,
        f"Step {step}/{total}: training loss={loss}",
        type_="metrics",
        data={"step": step, "total_steps": total, "train_loss": loss, "valid_loss": loss + 0.1},
    )


def test_jobs_watch_redraws_until_the_job_succeeds_and_exits_0(
    stack: Stack, terminal: list[pexpect.spawn]
) -> None:
    job_id = create_job(stack)
    child = spawn(stack, terminal, "jobs", "watch", job_id, "--interval", "0.2")
    child.expect("validating_files")
    child.expect("no metrics reported yet")

    stack.upstream.set_status(job_id, "running")
    for step in range(1, 6):
        metrics(stack, job_id, step, 10, 2.0 - step * 0.25)
    child.expect(r"step 5/10  ETA")
    child.expect(r"train loss 0\.7500  valid loss 0\.8500")

    metrics(stack, job_id, 10, 10, 0.25)
    stack.upstream.set_status(job_id, "succeeded", fine_tuned_model="ft:gpt-4o-mini:acme::x1")
    child.expect("step 10/10")
    child.expect(f"{job_id} succeeded: ft:gpt-4o-mini:acme::x1")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_jobs_watch_exits_non_zero_on_failure_and_shows_markup_as_text(
    stack: Stack, terminal: list[pexpect.spawn]
) -> None:
    job_id = create_job(stack)
    child = spawn(stack, terminal, "jobs", "watch", job_id, "--interval", "0.2")
    child.expect("validating_files")
    error = {
        "code": "invalid_file",
        "message": "[bold red]Line 3[/] <script>x</script>",
        "param": None,
    }
    stack.upstream.set_status(job_id, "failed", error=error)
    child.expect_exact("[bold red]Line 3[/] <script>x</script>")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1


def test_jobs_watch_of_a_cancelled_job_exits_3(stack: Stack, terminal: list[pexpect.spawn]) -> None:
    job_id = create_job(stack)
    stack.client().fine_tuning.jobs.cancel(job_id)
    child = spawn(stack, terminal, "jobs", "watch", job_id, "--interval", "0.2")
    child.expect(f"{job_id} cancelled")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3


def test_jobs_list_show_and_events(stack: Stack, terminal: list[pexpect.spawn]) -> None:
    first, second = create_job(stack), create_job(stack)
    stack.upstream.set_status(second, "running")

    listing = spawn(stack, terminal, "jobs", "list", "--virtual-key", "openai-main", columns=200)
    listing.expect(pexpect.EOF)
    rows = ANSI.sub("", listing.before or "")
    assert "VIRTUAL KEY" in rows and "STATUS" in rows
    assert re.search(rf"openai-main\s+{first}\s+gpt-4o-mini\s+validating_files", rows)
    assert re.search(rf"openai-main\s+{second}\s+gpt-4o-mini\s+running", rows)

    shown = spawn(stack, terminal, "jobs", "show", second)
    shown.expect(pexpect.EOF)
    text = ANSI.sub("", shown.before or "")
    assert re.search(r"status\s+running", text) and re.search(rf"id\s+{second}", text)

    events = spawn(stack, terminal, "jobs", "events", second, columns=200)
    events.expect(pexpect.EOF)
    lines = ANSI.sub("", events.before or "")
    assert lines.index("Job started") < lines.index("Created fine-tuning job")  # newest first


def test_files_upload_shows_progress_and_the_file_id(
    stack: Stack, terminal: list[pexpect.spawn], tmp_path: Path
) -> None:
    path = tmp_path / "train.jsonl"
    line = b'{"messages": [{"role": "user", "content": "hi"}]}\n'
    path.write_bytes(line * (3 * 1024 * 1024 // len(line)))
    child = spawn(stack, terminal, "files", "upload", str(path))
    child.expect(r"(file-\S+)\s+(\d+) bytes\s+train\.jsonl")
    file_id, size = child.match.group(1), int(child.match.group(2))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and size == path.stat().st_size
    assert stack.upstream.files[file_id].content == path.read_bytes()


def test_an_error_from_the_gateway_is_one_line_and_exit_1(
    stack: Stack, terminal: list[pexpect.spawn]
) -> None:
    child = spawn(stack, terminal, "jobs", "show", "ftjob-nope")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert "error: Could not find fine-tune: ftjob-nope" in ANSI.sub("", child.before or "")


def test_training_takes_each_metrics_event_once_and_estimates_from_the_step_rate() -> None:
    training = Training()
    page = [
        {"id": f"e{step}", "type": "metrics", "data": {"step": step, "total_steps": 10,
                                                        "train_loss": 1 / step}}
        for step in (1, 2)
    ]  # fmt: skip
    training.add(page, now=100.0)
    training.add([*page, {"id": "e4", "type": "metrics", "data": {"step": 4}}], now=106.0)
    training.add([{"id": "m", "type": "message", "data": {"step": 9}}], now=107.0)
    assert training.step == 4 and training.total_steps == 10
    assert sorted(training.train_loss) == [1, 2]
    # Steps 1 -> 4 took 6 s: 2 s a step, 6 steps left.
    assert training.eta_seconds(None, wall_now=time.time()) == pytest.approx(12.0)
    assert training.eta_seconds(1_000_060, wall_now=1_000_000) == 60
    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁" and len(sparkline([1.0] * 500, width=40)) == 40
