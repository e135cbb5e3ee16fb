"""Per-step metrics of a finished job on Azure's dated API, from its results file.

Per Microsoft's fine-tuning how-to, REST version (learn.microsoft.com; source
MicrosoftDocs/azure-ai-docs ``articles/ai-foundry/openai/includes/fine-tuning-rest.md``),
a job that succeeds has a result file, ``results.csv``, with a header and one row per
training step: ``step``, ``train_loss``, ``train_mean_token_accuracy``, ``valid_loss``,
``validation_mean_token_accuracy``, ``full_valid_loss``, ``full_valid_mean_token_accuracy``
(the ``full_*`` columns at the end of each epoch). Its rows become OpenAI metrics events;
``validation_mean_token_accuracy`` is OpenAI's ``valid_mean_token_accuracy``.

The file is the whole record of the steps, so the job's own metrics events (Azure's
events list carries some) are left out where the file is read, never listed twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.models import JobEvent
from gateway.provider import Download
from gateway.step_metrics import EventLog, MetricsBlock, read_csv

STEP = "step"
COLUMNS = {
    "train_loss": "train_loss",
    "train_mean_token_accuracy": "train_mean_token_accuracy",
    "valid_loss": "valid_loss",
    "validation_mean_token_accuracy": "valid_mean_token_accuracy",
    "valid_mean_token_accuracy": "valid_mean_token_accuracy",
    "full_valid_loss": "full_valid_loss",
    "full_valid_mean_token_accuracy": "full_valid_mean_token_accuracy",
}
# Events read from the events list of a finished job, at most (100 a call).
MAX_EVENTS = 10_000


async def results_block(
    job_id: str, file_id: str, created_at: int, content: Callable[[str], Awaitable[Download]]
) -> MetricsBlock | None:
    """The results file ``file_id`` as metrics events; None if it has no step column."""
    download = await content(file_id)
    try:
        metrics = await read_csv(
            download.chunks, step_column=STEP, columns=COLUMNS, what=f"result file {file_id}"
        )
    finally:
        if download.release is not None:
            await download.release()
    if metrics is None or not len(metrics):
        return None
    return MetricsBlock.of(metrics, created_at, job_id, file_id)


def merged_log(events: list[JobEvent], block: MetricsBlock | None) -> EventLog:
    if block is None:
        return EventLog(events, [])
    return EventLog([e for e in events if e.type != "metrics"], [block])
