"""A Bedrock job's history as OpenAI job events, synthesized from one GetModelCustomizationJob.

Bedrock keeps no event log, but its answer holds the times of each step (validation,
data processing, training), the final losses and the failure message. Each event's id
is derived from the job and what happened, so it is the same on every call and ``after``
pages work; events are listed newest first, as OpenAI lists them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from gateway.ids import stable_id
from gateway.models import JobEvent
from gateway_bedrock.transform import BedrockJob, Step, epoch_seconds, job_id

EVENT_ID_PREFIX = "ftevent-"
_STEPS = (
    ("validationDetails", "Validation of the training data"),
    ("dataProcessingDetails", "Processing of the training data"),
    ("trainingDetails", "Training"),
)
_STEP_ENDS = {"Completed": "completed", "Failed": "failed", "Stopped": "stopped"}
Level = Literal["info", "warn", "error"]


class _Events:
    def __init__(self, job: BedrockJob) -> None:
        self.job = job
        self.found: list[tuple[int, int, JobEvent]] = []

    def add(
        self,
        kind: str,
        when: datetime | None,
        message: str,
        *,
        level: Level = "info",
        data: dict[str, Any] | None = None,
    ) -> None:
        if when is None:
            return
        event = JobEvent(
            id=stable_id(EVENT_ID_PREFIX, self.job.jobArn, kind),
            created_at=epoch_seconds(when),
            level=level,
            message=message,
            # Never "metrics": OpenAI's metrics events are per step and carry data.step
            # (clients plot them by it); Bedrock's final losses belong to no step.
            type="message",
            data=data or {},
        )
        # Ties in time keep the order the job went through them.
        self.found.append((event.created_at, len(self.found), event))

    def newest_first(self) -> list[JobEvent]:
        return [event for _, _, event in sorted(self.found, reverse=True)]


def job_events(job: BedrockJob) -> list[JobEvent]:
    events = _Events(job)
    events.add("created", job.creationTime, f"Created fine-tuning job: {job_id(job.jobName)}")
    details = job.statusDetails
    for field, label in _STEPS:
        step: Step | None = getattr(details, field) if details else None
        if step is None or step.status in (None, "NotStarted"):
            continue
        events.add(f"{field}:started", step.creationTime, f"{label} started")
        end = _STEP_ENDS.get(step.status)
        if end is not None:
            level: Level = "error" if end == "failed" else "info"
            events.add(f"{field}:{end}", step.lastModifiedTime, f"{label} {end}", level=level)
    ended = job.endTime or job.lastModifiedTime
    if job.status == "Completed":
        _add_losses(events, job, ended)
        events.add("succeeded", ended, "The job has successfully completed")
    elif job.status == "Failed":
        reason = job.failureMessage or "no reason given"
        events.add("failed", ended, f"The job failed: {reason}", level="error")
    elif job.status == "Stopping":
        events.add("stopping", job.lastModifiedTime, "The job is being cancelled")
    elif job.status == "Stopped":
        events.add("cancelled", ended, "The job was cancelled")
    return events.newest_first()


def _add_losses(events: _Events, job: BedrockJob, when: datetime | None) -> None:
    data: dict[str, Any] = {}
    if job.trainingMetrics is not None and job.trainingMetrics.trainingLoss is not None:
        data["train_loss"] = job.trainingMetrics.trainingLoss
    losses = [m.validationLoss for m in job.validationMetrics if m.validationLoss is not None]
    if losses:
        data["valid_loss"] = losses[0]
    if data:
        shown = ", ".join(f"{name} {value:.4f}" for name, value in data.items())
        events.add("metrics", when, f"Final losses: {shown}", data=data)
