"""Managed mode end to end, through the official OpenAI SDK, on Bedrock (moto) and Vertex."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest

from gateway_portkey.db import open_database
from gateway_portkey.records import Records, now_ns
from plugins.bedrock.tests.conftest import BUCKET, moto_job, moto_url, s3  # noqa: F401
from plugins.portkey.tests.managed import (
    CHAT,
    GEMINI,
    NOVA,
    Managed,
    jsonl,
    managed_config,
    target,
    wait_for,
)
from plugins.portkey.tests.test_records import job_record
from plugins.vertex.tests.conftest import (  # noqa: F401 - fixtures
    VertexStack,
    fake_gcs,
    registry,
    rsa_key,
    vertex,
)


@pytest.fixture
def managed(
    request: pytest.FixtureRequest,
    moto_url: str,  # noqa: F811
    s3: Any,  # noqa: F811
    vertex: VertexStack,  # noqa: F811
    tmp_path: Path,
) -> Iterator[Managed]:
    """The gateway's files in a local directory, or (parametrized) in S3 on moto."""
    store = getattr(request, "param", "local")
    raw = managed_config(moto_url, vertex, tmp_path / "data", store=store)
    built = Managed(vertex, moto_url, s3, raw)
    built.gateway_url = built.start_gateway()
    yield built
    built.close()


def created_upstream(client: openai.OpenAI, job_id: str) -> bool:
    events = client.fine_tuning.jobs.list_events(job_id, limit=50).data
    return any(e.message.startswith(("Created bedrock", "Created vertex")) for e in events)


def wait_created(client: openai.OpenAI, job_id: str) -> Any:
    wait_for(lambda: created_upstream(client, job_id), bool)
    return client.fine_tuning.jobs.retrieve(job_id)


def upstream_jobs(managed: Managed, virtual_key: str) -> list[Any]:
    direct = openai.OpenAI(
        base_url=managed.gateway_url,
        api_key="gw-search-team-0123456789",
        max_retries=0,
        default_headers={"x-portkey-virtual-key": virtual_key},
    )
    managed.clients.append(direct)
    return list(direct.fine_tuning.jobs.list())


@pytest.mark.parametrize("managed", ["local", "s3"], indirect=True)
def test_managed_upload_once_and_train_on_two_targets(managed: Managed) -> None:
    client = managed.client()
    file_id = managed.upload(client)
    if managed.raw_config["providers"]["portkey"].get("store"):
        stored = managed.s3.list_objects_v2(Bucket=BUCKET, Prefix="managed-store/")
        assert [o["Key"] for o in stored["Contents"]] == [f"managed-store/{file_id}"]
    on_bedrock = client.fine_tuning.jobs.create(
        model=NOVA, training_file=file_id, extra_body=target("bedrock-main")
    )
    on_vertex = client.fine_tuning.jobs.create(
        model=GEMINI, training_file=file_id, extra_body=target("vertex-main")
    )
    assert on_bedrock.status == on_vertex.status == "validating_files"
    assert on_bedrock.training_file == on_vertex.training_file == file_id
    assert on_bedrock.id.startswith("ftjob-") and on_bedrock.id != on_vertex.id

    bedrock_job = wait_created(client, on_bedrock.id)
    vertex_job = wait_created(client, on_vertex.id)
    # The gateway's ids and files, whatever the targets call them.
    assert (bedrock_job.id, bedrock_job.training_file) == (on_bedrock.id, file_id)
    assert (vertex_job.id, vertex_job.training_file) == (on_vertex.id, file_id)
    assert bedrock_job.status == "running" and vertex_job.status == "validating_files"

    # Each target got one job, trained on its own converted copy of the one upload.
    [upstream_bedrock] = upstream_jobs(managed, "bedrock-main")
    [upstream_vertex] = upstream_jobs(managed, "vertex-main")
    assert upstream_bedrock.model == NOVA and upstream_vertex.model == GEMINI
    staged_nova = [k for k in managed.s3_keys() if k.endswith(".jsonl")]  # gw/: Bedrock's
    assert staged_nova, "the training file was staged to S3"
    gcs_objects = managed.vertex.objects()
    assert any(b'"contents"' in body for body in gcs_objects.values()), "converted for Gemini"

    # One list covers both targets, newest first.
    listed = [job.id for job in client.fine_tuning.jobs.list()]
    assert listed == [on_vertex.id, on_bedrock.id]

    # The target's progress shows through the gateway's job.
    moto_job(upstream_bedrock.id).status = "Completed"
    done = client.fine_tuning.jobs.retrieve(on_bedrock.id)
    assert done.status == "succeeded" and done.fine_tuned_model
    assert done.id == on_bedrock.id and done.training_file == file_id


def test_managed_metadata_filter(managed: Managed) -> None:
    client = managed.client()
    file_id = managed.upload(client)

    def create(**metadata: str) -> str:
        return client.fine_tuning.jobs.create(
            model=NOVA,
            training_file=file_id,
            metadata=metadata or None,
            extra_body=target("bedrock-main"),
        ).id

    blue, _red, plain = create(team="blue"), create(team="red"), create()
    tagged = client.fine_tuning.jobs.list(extra_query={"metadata[team]": "blue"})
    assert [j.id for j in tagged.data] == [blue]
    untagged = client.fine_tuning.jobs.list(extra_query={"metadata": "null"})
    assert [j.id for j in untagged.data] == [plain]


def test_managed_files_and_jobs_belong_to_their_gateway_key(managed: Managed) -> None:
    owner, other = managed.client(), managed.other_client()
    file_id = managed.upload(owner)
    job = owner.fine_tuning.jobs.create(
        model=NOVA, training_file=file_id, extra_body=target("bedrock-main")
    )
    assert other.files.list().data == []
    assert other.fine_tuning.jobs.list().data == []
    for call in (
        lambda: other.files.retrieve(file_id),
        lambda: other.files.content(file_id),
        lambda: other.files.delete(file_id),
        lambda: other.fine_tuning.jobs.retrieve(job.id),
        lambda: other.fine_tuning.jobs.cancel(job.id),
        lambda: other.fine_tuning.jobs.list_events(job.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    # Nor can another key train on someone else's file.
    with pytest.raises(openai.BadRequestError) as refused:
        other.fine_tuning.jobs.create(
            model=NOVA, training_file=file_id, extra_body=target("bedrock-main")
        )
    assert refused.value.body["param"] == "training_file"  # type: ignore[index]
    assert owner.files.retrieve(file_id).id == file_id


def test_managed_file_round_trip_and_bad_lines(managed: Managed) -> None:
    client = managed.client()
    data = jsonl(CHAT)
    file_id = managed.upload(client, data, "mine.jsonl")
    got = client.files.retrieve(file_id)
    assert (got.filename, got.bytes, got.purpose) == ("mine.jsonl", len(data), "fine-tune")
    assert client.files.content(file_id).read() == data

    bad = data + b'{"messages": "nope"}\n' + b"not json\n"
    with pytest.raises(openai.BadRequestError) as refused:
        managed.upload(client, bad)
    message = refused.value.body["message"]  # type: ignore[index]
    assert "line 3" in message and "line 4" in message
    assert [f.id for f in client.files.list()] == [file_id]
    store = Path(managed.raw_config["providers"]["portkey"]["data_dir"]) / "files"
    assert sorted(p.name for p in store.iterdir() if p.is_file()) == [file_id]
    assert list((store / ".incoming").iterdir()) == []

    assert client.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file_id)
    assert not (store / file_id).exists()


def test_managed_delete_refused_while_a_job_uses_the_file(managed: Managed) -> None:
    client = managed.client()
    file_id = managed.upload(client)
    job = client.fine_tuning.jobs.create(
        model=NOVA, training_file=file_id, extra_body=target("bedrock-main")
    )
    wait_created(client, job.id)
    with pytest.raises(openai.ConflictError) as refused:
        client.files.delete(file_id)
    assert job.id in refused.value.message
    [upstream] = upstream_jobs(managed, "bedrock-main")
    moto_job(upstream.id).status = "Completed"  # ended upstream: the file is free again
    assert client.files.delete(file_id).deleted


def test_managed_create_with_the_same_idempotency_key_makes_one_job(managed: Managed) -> None:
    client = managed.client()
    file_id = managed.upload(client)

    def create(suffix: str) -> Any:
        return client.fine_tuning.jobs.create(
            model=NOVA,
            training_file=file_id,
            suffix=suffix,
            extra_body=target("bedrock-main"),
            extra_headers={"Idempotency-Key": "create-once-1"},
        )

    first, again = create("a"), create("a")
    assert first.id == again.id
    wait_created(client, first.id)
    assert len(upstream_jobs(managed, "bedrock-main")) == 1
    with pytest.raises(openai.ConflictError):
        create("b")  # the same key for another request


def test_managed_failure_while_staging_leaves_a_failed_job_and_nothing_upstream(
    managed: Managed,
) -> None:
    client = managed.client()
    file_id = managed.upload(client)
    job = client.fine_tuning.jobs.create(
        model=NOVA,
        training_file=file_id,
        extra_body=target("bedrock-main", **{"x-portkey-aws-s3-bucket": "no-such-bucket"}),
    )
    ended = wait_for(
        lambda: client.fine_tuning.jobs.retrieve(job.id), lambda j: j.status == "failed"
    )
    assert ended.status == "failed" and ended.error and ended.error.message
    assert upstream_jobs(managed, "bedrock-main") == []
    assert managed.s3_keys() == []


def test_managed_staging_bucket_must_be_one_the_virtual_key_lists(managed: Managed) -> None:
    # portkey_options may pick another bucket of the target's account, but only one its
    # virtual key lists: the config's credentials would write anywhere they can reach.
    client = managed.client()
    file_id = managed.upload(client)
    refused = [
        ("bedrock-main", "x-portkey-aws-s3-bucket", "someone-elses-bucket"),
        ("vertex-main", "x-portkey-vertex-storage-bucket-name", "someone-elses-bucket"),
    ]
    for virtual_key, option, bucket in refused:
        with pytest.raises(openai.BadRequestError) as caught:
            client.fine_tuning.jobs.create(
                model=NOVA,
                training_file=file_id,
                extra_body=target(virtual_key, **{option: bucket}),
            )
        assert caught.value.code == "resource_not_allowed"
        assert caught.value.param == f"portkey_options.{option}"
    assert list(client.fine_tuning.jobs.list()) == []
    assert upstream_jobs(managed, "bedrock-main") == []


def test_managed_failure_while_creating_removes_the_staged_copy(managed: Managed) -> None:
    client = managed.client()
    file_id = managed.upload(client)
    body = {**target("bedrock-main"), "provider_options": {"output_file": "/not/in/s3"}}
    job = client.fine_tuning.jobs.create(model=NOVA, training_file=file_id, extra_body=body)
    ended = wait_for(
        lambda: client.fine_tuning.jobs.retrieve(job.id), lambda j: j.status == "failed"
    )
    assert ended.status == "failed" and ended.error and ended.error.param == "output_file"
    assert upstream_jobs(managed, "bedrock-main") == []
    assert managed.s3_keys() == [], "the copy staged for the failed job was deleted"
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id).data]
    assert any("Staging failed" in message for message in events)


def test_managed_create_refuses_unknown_targets_and_files(managed: Managed) -> None:
    client = managed.client()
    file_id = managed.upload(client)
    cases = [
        ({"model": NOVA, "training_file": file_id}, "portkey_options"),
        (
            {"model": NOVA, "training_file": file_id, "extra_body": target("nope")},
            "portkey_options.x-portkey-virtual-key",
        ),
        (
            {"model": NOVA, "training_file": "file-missing", "extra_body": target("bedrock-main")},
            "training_file",
        ),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            client.fine_tuning.jobs.create(**kwargs)
        assert refused.value.body["param"] == param  # type: ignore[index]
    assert client.fine_tuning.jobs.list().data == []


def test_managed_cancel_before_and_after_the_upstream_job(managed: Managed) -> None:
    client = managed.client()
    file_id = managed.upload(client)
    job = client.fine_tuning.jobs.create(
        model=NOVA, training_file=file_id, extra_body=target("bedrock-main")
    )
    wait_created(client, job.id)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.id == job.id and cancelled.status == "cancelled"
    [upstream] = upstream_jobs(managed, "bedrock-main")
    assert moto_job(upstream.id).status in ("Stopping", "Stopped")


def test_managed_events_page_through_target_and_gateway_events(managed: Managed) -> None:
    client = managed.client()
    file_id = managed.upload(client)
    job = client.fine_tuning.jobs.create(
        model=NOVA, training_file=file_id, extra_body=target("bedrock-main")
    )
    wait_created(client, job.id)
    everything = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    paged = list(client.fine_tuning.jobs.list_events(job.id, limit=1))
    assert [e.id for e in paged] == [e.id for e in everything]
    messages = [e.message for e in everything]
    assert messages[-1].startswith("Created; staging files to bedrock")


def test_managed_records_survive_a_restart(
    moto_url: str,  # noqa: F811
    s3: Any,  # noqa: F811
    vertex: VertexStack,  # noqa: F811
    tmp_path: Path,
) -> None:
    raw = managed_config(moto_url, vertex, tmp_path / "data")
    first = Managed(vertex, moto_url, s3, raw)
    first.gateway_url = first.start_gateway()
    client = first.client()
    file_id = first.upload(client)
    job = client.fine_tuning.jobs.create(
        model=NOVA, training_file=file_id, extra_body=target("bedrock-main")
    )
    wait_created(client, job.id)
    first.close()  # the gateway stops: its database and store are closed

    again = Managed(vertex, moto_url, s3, raw)
    again.gateway_url = again.start_gateway()
    try:
        later = again.client()
        assert [f.id for f in later.files.list()] == [file_id]
        assert later.files.content(file_id).read() == jsonl(CHAT)
        assert later.fine_tuning.jobs.retrieve(job.id).status == "running"
        assert [j.id for j in later.fine_tuning.jobs.list()] == [job.id]
    finally:
        again.close()


def test_managed_job_left_staging_by_a_stopped_gateway_is_failed_on_restart(
    managed: Managed,
) -> None:
    """As after a SIGKILL mid-staging: the record says validating_files, nobody beats."""
    data_dir = Path(managed.raw_config["providers"]["portkey"]["data_dir"])
    stale = msgspec.structs.replace(
        job_record("search-team"), heartbeat_ns=now_ns() - 10 * 60 * 10**9
    )

    async def left_behind() -> None:
        db = await open_database(str(data_dir / "gateway.sqlite3"))
        try:
            await Records(db).insert_job(stale)
        finally:
            await db.close()

    asyncio.run(left_behind())
    job = managed.client().fine_tuning.jobs.retrieve(stale.id)  # this gateway opens the records
    assert job.status == "failed" and job.error is not None
    assert job.error.code == "staging_interrupted" and job.finished_at is not None


def test_managed_events_carry_the_targets_step_metrics(managed: Managed) -> None:
    client = managed.client()
    file_id = managed.upload(client)
    job = client.fine_tuning.jobs.create(
        model=NOVA, training_file=file_id, extra_body=target("bedrock-main")
    )
    wait_created(client, job.id)
    [upstream] = upstream_jobs(managed, "bedrock-main")
    backend = moto_job(upstream.id)
    bucket, _, key = backend.output_data_config["s3Uri"].removeprefix("s3://").partition("/")
    folder = f"{key.rstrip('/')}/model-customization-job-{backend.job_arn.rsplit('/', 1)[-1]}/"
    managed.s3.put_object(
        Bucket=bucket,
        Key=folder + "training_artifacts/step_wise_training_metrics.csv",
        Body=b"step_number,epoch_number,training_loss,perplexity\n0,0,2.0,7.4\n1,0,1.0,2.7\n",
    )
    backend.status = "Completed"
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert [e.data for e in events if "step" in e.data] == [
        {"step": 1, "train_loss": 1.0},
        {"step": 0, "train_loss": 2.0},
    ]
