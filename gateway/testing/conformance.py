"""The conformance suite: OpenAI's fine-tuning and files API, through the official SDK.

A provider plugin opts in with one line in one of its test modules::

    from gateway.testing.conformance import TestConformance  # noqa: F401

and a ``conformance_target`` fixture in its ``conftest.py`` (see
``gateway.testing.target.ConformanceTarget`` and docs/plugins.md). Every answer is
checked against OpenAI's schema as well (``gateway.testing.schema_guard``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import openai
import pytest

from gateway.testing.kit import KitGateway

TRAINING_JSONL = (
    b'{"messages": [{"role": "user", "content": "Hi"}, '
    b'{"role": "assistant", "content": "Hello"}]}\n'
    b'{"messages": [{"role": "user", "content": "Bye"}, '
    b'{"role": "assistant", "content": "Ciao"}]}\n'
)

# How the gateway's 400 names each operation a provider lacks (gateway.provider.Provider).
OPERATION_WORDS = {
    "cancel": "cancelling",
    "pause": "pausing",
    "resume": "resuming",
    "events": "events",
    "checkpoints": "checkpoints",
    "file_content": "file content",
}
ENDED = ("succeeded", "failed", "cancelled")


def _records(jsonl: bytes) -> list[Any]:
    return [json.loads(line) for line in jsonl.splitlines() if line.strip()]


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    body = json.loads(exc.response.text)
    assert set(body) == {"error"}, body
    assert {"message", "type", "param", "code"} <= set(body["error"]), body
    error: dict[str, Any] = body["error"]
    return error


class TestConformance:
    """Run against the ``conformance_target`` fixture of the directory that imports it."""

    @pytest.fixture
    def kit(self, conformance_gateway: KitGateway) -> KitGateway:
        return conformance_gateway

    def _job(self, kit: KitGateway, **extra: Any) -> Any:
        file_id = kit.target.seed_file(TRAINING_JSONL)
        return kit.client().fine_tuning.jobs.create(
            training_file=file_id,
            model=kit.target.model,
            extra_body=kit.target.create_body,
            **extra,
        )

    def _fault_probe(self, kit: KitGateway) -> Callable[[], Any]:
        """The call that meets the fault ``fail_next`` sets (``ConformanceTarget.fault_probe``)."""
        jobs = kit.client().fine_tuning.jobs
        if kit.target.fault_probe == "retrieve":
            job_id = self._job(kit).id
            return lambda: jobs.retrieve(job_id)
        return lambda: jobs.list()

    def test_job_create_retrieve_list_and_status(self, kit: KitGateway) -> None:
        client = kit.client()
        file_id = kit.target.seed_file(TRAINING_JSONL)
        job = client.fine_tuning.jobs.create(
            training_file=file_id, model=kit.target.model, extra_body=kit.target.create_body
        )
        assert job.object == "fine_tuning.job"
        assert job.training_file == file_id
        assert job.status in ("validating_files", "queued", "running")
        again = client.fine_tuning.jobs.retrieve(job.id)
        assert (again.id, again.training_file) == (job.id, file_id)
        assert job.id in [j.id for j in client.fine_tuning.jobs.list(limit=100).data]

        kit.target.set_status(job.id, "running")
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
        kit.target.set_status(job.id, "succeeded")
        done = client.fine_tuning.jobs.retrieve(job.id)
        assert done.status == "succeeded"
        assert done.fine_tuned_model
        assert done.finished_at is not None

    def test_job_cancel_or_clear_400(self, kit: KitGateway) -> None:
        job = self._job(kit)
        client = kit.client()
        if kit.target.does("cancel"):
            assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
            assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
        else:
            self._assert_lacked(kit, "cancel", lambda: client.fine_tuning.jobs.cancel(job.id))
            assert client.fine_tuning.jobs.retrieve(job.id).status != "cancelled"

    @pytest.mark.parametrize("operation", ["pause", "resume", "events", "checkpoints"])
    def test_job_operation_works_or_is_clear_400_leaving_the_job(
        self, kit: KitGateway, operation: str
    ) -> None:
        job = self._job(kit)
        client = kit.client()
        jobs = client.fine_tuning.jobs
        # Only a paused job can be resumed: paused here, or by the provider itself where
        # it pauses jobs but offers no pause (Fireworks).
        pause_upstream = None if kit.target.does("pause") else kit.target.pause_upstream
        if operation in ("pause", "resume"):
            kit.target.set_status(job.id, "running")
        if operation == "resume" and kit.target.does("pause"):
            jobs.pause(job.id)
        elif operation == "resume" and pause_upstream is not None:
            pause_upstream(job.id)
        call: Callable[[], Any] = {
            "pause": lambda: jobs.pause(job.id),
            "resume": lambda: jobs.resume(job.id),
            "events": lambda: jobs.list_events(job.id, limit=5),
            "checkpoints": lambda: jobs.checkpoints.list(job.id, limit=5),
        }[operation]
        before = jobs.retrieve(job.id).status
        if kit.target.does(operation):
            answer = call()
            if operation in ("pause", "resume"):
                # The job itself, not cancelled or ended on the way; one the provider had
                # paused may be answered running again.
                resumed = operation == "resume" and pause_upstream is not None
                allowed = {before, "running"} if resumed else {before}
                assert answer.id == job.id
                assert answer.status in allowed
                assert answer.status not in ENDED
            else:
                assert answer.object == "list"
        else:
            self._assert_lacked(kit, operation, call)
            assert jobs.retrieve(job.id).status == before  # never another operation

    def test_metrics_are_events_with_step_and_train_loss_newest_first(
        self, kit: KitGateway
    ) -> None:
        add_metrics = kit.target.add_metrics
        if not kit.target.does("metrics") or add_metrics is None:
            pytest.skip("the plugin says it lacks per-step metrics")
        job = self._job(kit)
        kit.target.set_status(job.id, "running")
        losses = {1: 2.5, 2: 1.25, 3: 0.625}
        for step, loss in losses.items():
            add_metrics(job.id, step, loss)
        # limit=2: the SDK pages on by ``after``, so event ids must be stable and unique.
        events = list(kit.client().fine_tuning.jobs.list_events(job.id, limit=2))
        assert len({e.id for e in events}) == len(events)
        metrics = [e.data for e in events if e.type == "metrics"]
        assert all(isinstance(data, dict) for data in metrics), metrics
        pairs = [(data["step"], data["train_loss"]) for data in metrics if isinstance(data, dict)]
        # Newest first, as OpenAI lists events (their shape is the schema guard's to check).
        assert pairs == [(step, pytest.approx(losses[step])) for step in (3, 2, 1)]

    def _assert_lacked(self, kit: KitGateway, operation: str, call: Callable[[], Any]) -> None:
        with pytest.raises(openai.BadRequestError) as caught:
            call()
        error = _error(caught.value)
        assert error["code"] == "unsupported_operation"
        assert OPERATION_WORDS[operation] in error["message"]
        assert "provider does not support" in error["message"]

    def test_jobs_page_by_after_with_true_has_more(self, kit: KitGateway) -> None:
        made = {self._job(kit).id for _ in range(3)}
        client = kit.client()
        first = client.fine_tuning.jobs.list(limit=2)
        assert len(first.data) == 2
        assert first.has_more is True
        rest = client.fine_tuning.jobs.list(limit=2, after=first.data[-1].id)
        assert not {j.id for j in first.data} & {j.id for j in rest.data}
        seen = [j.id for j in client.fine_tuning.jobs.list(limit=1)]
        assert len(seen) == len(set(seen))
        assert made <= set(seen)
        last = client.fine_tuning.jobs.list(limit=100, after=seen[-2])
        assert [j.id for j in last.data] == [seen[-1]]
        assert last.has_more is False

    def test_unknown_ids_are_404(self, kit: KitGateway) -> None:
        client = kit.client()
        with pytest.raises(openai.NotFoundError) as caught:
            client.fine_tuning.jobs.retrieve("ftjob-doesnotexist0123456789")
        _error(caught.value)
        if kit.target.does("cancel"):
            with pytest.raises(openai.NotFoundError):
                client.fine_tuning.jobs.cancel("ftjob-doesnotexist0123456789")
        if kit.target.does("files"):
            with pytest.raises(openai.NotFoundError):
                client.files.retrieve("file-doesnotexist0123456789")

    def test_files_upload_retrieve_list_content_delete(self, kit: KitGateway) -> None:
        client = kit.client()
        if not kit.target.does("files"):
            with pytest.raises(openai.BadRequestError) as caught:
                client.files.list()
            assert _error(caught.value)["code"] == "unsupported_operation"
            return
        uploaded = client.files.create(file=("train.jsonl", TRAINING_JSONL), purpose="fine-tune")
        assert uploaded.filename == "train.jsonl"
        assert client.files.retrieve(uploaded.id).id == uploaded.id
        assert uploaded.id in [f.id for f in client.files.list()]
        if kit.target.does("file_content"):
            content = client.files.content(uploaded.id).read()
            # A provider may keep the lines in its own encoding (Together and Fireworks
            # write them anew): the same records, and ``bytes`` is the size it keeps.
            assert _records(content) == _records(TRAINING_JSONL)
            assert uploaded.bytes == len(content)
        else:
            assert uploaded.bytes > 0
            self._assert_lacked(kit, "file_content", lambda: client.files.content(uploaded.id))
        job = client.fine_tuning.jobs.create(
            training_file=uploaded.id, model=kit.target.model, extra_body=kit.target.create_body
        )
        assert job.training_file == uploaded.id
        # Ended first: a provider may keep a file while a job that trains on it runs
        # (managed mode refuses to delete it, 409, as it would have nothing to stage).
        kit.target.set_status(job.id, "succeeded")
        deleted = client.files.delete(uploaded.id)
        assert (deleted.id, deleted.deleted) == (uploaded.id, True)
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(uploaded.id)

    def test_files_page_by_after_with_true_has_more(self, kit: KitGateway) -> None:
        client = kit.client()
        if not kit.target.does("files"):
            with pytest.raises(openai.BadRequestError) as caught:
                client.files.list(limit=2)
            assert _error(caught.value)["code"] == "unsupported_operation"
            return
        made = {kit.target.seed_file(TRAINING_JSONL) for _ in range(3)}
        first = client.files.list(limit=2)
        assert len(first.data) == 2
        assert first.has_more is True
        rest = client.files.list(limit=2, after=first.data[-1].id)
        assert not {f.id for f in first.data} & {f.id for f in rest.data}
        seen = [f.id for f in client.files.list(limit=1)]
        assert len(seen) == len(set(seen))
        assert made <= set(seen)
        last = client.files.list(limit=100, after=seen[-2])
        assert [f.id for f in last.data] == [seen[-1]]
        assert last.has_more is False

    @pytest.mark.parametrize(
        ("upstream", "answered", "error_class"),
        [
            (401, 502, openai.InternalServerError),
            (403, 502, openai.InternalServerError),
            (404, 404, openai.NotFoundError),
            (429, 429, openai.RateLimitError),
            (500, 502, openai.InternalServerError),
            (503, 502, openai.InternalServerError),
        ],
    )
    def test_upstream_errors_are_mapped(
        self, kit: KitGateway, upstream: int, answered: int, error_class: type[Exception]
    ) -> None:
        probe = self._fault_probe(kit)
        headers = {"Retry-After": "7"} if upstream == 429 else {}
        kit.target.fail_next(upstream, headers)
        with pytest.raises(openai.APIStatusError) as caught:
            probe()
        assert isinstance(caught.value, error_class)
        assert caught.value.status_code == answered
        _error(caught.value)
        if upstream == 429:
            assert caught.value.response.headers["retry-after"] == "7"
        assert probe().object in ("list", "fine_tuning.job")  # the next call works

    def test_create_with_idempotency_key_makes_one_job(self, kit: KitGateway) -> None:
        if not kit.target.does("idempotency"):
            pytest.skip("the plugin says it lacks idempotent create")
        file_id = kit.target.seed_file(TRAINING_JSONL)
        client = kit.client()
        key = f"kit-{uuid.uuid4()}"
        jobs = [
            client.fine_tuning.jobs.create(
                training_file=file_id,
                model=kit.target.model,
                extra_headers={"Idempotency-Key": key},
                extra_body=kit.target.create_body,
            )
            for _ in range(2)
        ]
        assert jobs[0].id == jobs[1].id
        other = client.fine_tuning.jobs.create(
            training_file=file_id, model=kit.target.model, extra_body=kit.target.create_body
        )
        assert other.id != jobs[0].id

    def test_async_client_creates_and_lists(self, kit: KitGateway) -> None:
        file_id = kit.target.seed_file(TRAINING_JSONL)

        async def story() -> None:
            client = kit.async_client()
            try:
                job = await client.fine_tuning.jobs.create(
                    training_file=file_id,
                    model=kit.target.model,
                    extra_body=kit.target.create_body,
                )
                assert job.id in [j.id async for j in client.fine_tuning.jobs.list(limit=2)]
            finally:
                await client.close()

        asyncio.run(story())

    def test_no_credential_in_any_answer_or_log_line(self, kit: KitGateway) -> None:
        client = kit.client()
        answers: list[str] = []
        job = self._job(kit)
        answers.append(client.fine_tuning.jobs.with_raw_response.retrieve(job.id).text)
        answers.append(client.fine_tuning.jobs.with_raw_response.list().text)
        probe = self._fault_probe(kit)
        for status in (401, 500):
            kit.target.fail_next(status, {})
            with pytest.raises(openai.APIStatusError) as caught:
                probe()
            answers.append(caught.value.response.text)
            answers.extend(f"{k}: {v}" for k, v in caught.value.response.headers.items())
        with pytest.raises(openai.NotFoundError) as missing:
            client.fine_tuning.jobs.retrieve("ftjob-doesnotexist0123456789")
        answers.append(missing.value.response.text)
        assert kit.log_lines, "the gateway logged nothing: the check would prove nothing"
        for secret in kit.target.secrets:
            for text in answers + kit.log_lines:
                assert secret not in text
