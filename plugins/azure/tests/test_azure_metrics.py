"""Per-step metrics on Azure's dated API: from a succeeded job's results.csv."""

from __future__ import annotations

from plugins.azure.tests.conftest import AzureStack
from tests.conftest import TRAINING_JSONL


def _job(azure: AzureStack) -> str:
    client = azure.client("azure-dated")
    training = azure.dated.add_file("train.jsonl", TRAINING_JSONL)
    job_id: str = client.fine_tuning.jobs.create(
        training_file=training["id"], model="gpt-4o-mini"
    ).id
    azure.dated.set_status(job_id, "running")
    azure.dated.add_event(job_id, "step 2", type_="metrics", data={"step": 2, "train_loss": 0.75})
    return job_id


def test_succeeded_job_lists_its_results_file_steps_newest_first(azure: AzureStack) -> None:
    client = azure.client("azure-dated")
    job_id = _job(azure)
    azure.dated.set_status(job_id, "succeeded")
    events = list(client.fine_tuning.jobs.list_events(job_id, limit=2))
    steps = [e.data for e in events if e.type == "metrics"]
    # The file's rows, once each: the job's own metrics event is not listed twice.
    assert steps == [
        {
            "step": 2,
            "train_loss": 0.75,
            "train_mean_token_accuracy": 0.625,
            "valid_loss": 1.0,
            "valid_mean_token_accuracy": 0.5,
            "full_valid_loss": 0.875,
            "full_valid_mean_token_accuracy": 0.5625,
        },
        {
            "step": 1,
            "train_loss": 1.25,
            "train_mean_token_accuracy": 0.5,
            "valid_loss": 1.5,
            "valid_mean_token_accuracy": 0.375,
        },
    ]
    messages = [e.message for e in events if e.type == "message"]
    assert messages[-1].startswith("Job enqueued") and "Job entered state succeeded" in messages
    assert len({e.id for e in events}) == len(events)


def test_finished_jobs_events_and_results_are_read_once(azure: AzureStack) -> None:
    client = azure.client("azure-dated")
    job_id = _job(azure)
    azure.dated.set_status(job_id, "succeeded")
    first = [e.id for e in client.fine_tuning.jobs.list_events(job_id, limit=100)]
    before = len(azure.dated.requests)
    again = [e.id for e in client.fine_tuning.jobs.list_events(job_id, limit=100)]
    assert again == first and len(azure.dated.requests) == before


def test_malformed_results_rows_are_skipped_not_invented(azure: AzureStack) -> None:
    client = azure.client("azure-dated")
    job_id = _job(azure)
    azure.dated.results_csv = b"step,train_loss\n1,0.5\nbroken,row\n3,0.25\n"
    azure.dated.set_status(job_id, "succeeded")
    events = client.fine_tuning.jobs.list_events(job_id, limit=100).data
    assert [e.data for e in events if e.type == "metrics"] == [
        {"step": 3, "train_loss": 0.25},
        {"step": 1, "train_loss": 0.5},
    ]


def test_running_job_pages_its_events_upstream(azure: AzureStack) -> None:
    client = azure.client("azure-dated")
    job_id = _job(azure)
    events = client.fine_tuning.jobs.list_events(job_id, limit=1)
    assert [e.data for e in events.data] == [{"step": 2, "train_loss": 0.75}] and events.has_more
