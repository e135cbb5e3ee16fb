"""What a provider plugin hands the conformance suite: one value, from one fixture.

A plugin's ``conftest.py`` defines a fixture named ``conformance_target`` that starts its
fake upstream (on ``gateway_servers``, the kit's server thread) and returns a
:class:`ConformanceTarget`. The kit builds a gateway in front of it and runs the suite.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# What a plugin may say it lacks; the suite then checks that each is a clear 400 instead
# ("metrics" and "idempotency" have no 400: the suite only leaves their checks out).
OPERATIONS = frozenset(
    {
        "cancel",
        "pause",
        "resume",
        "events",
        "checkpoints",
        "files",
        "file_content",
        "idempotency",
        "metrics",
    }
)


@dataclass(frozen=True)
class ConformanceTarget:
    """How to reach one provider's fake upstream through the gateway, and how to drive it.

    ``virtual_key``: the ``[virtual_keys.NAME]`` table, as the TOML file decodes, that
    points the gateway at the fake (``provider`` + settings + credentials); it becomes
    the gateway key's default virtual key, so the SDK needs no extra header.
    ``seed_file(content)``: store a training file upstream; returns the file id a client
    passes as ``training_file``.
    ``set_status(job_id, status)``: move a job (the id the gateway answered) to an OpenAI
    status, as the provider's workers would.
    ``fail_next(status, headers)``: the fake answers its next request with ``status``
    and ``headers``, in the provider's own error shape.
    ``secrets``: the credentials in ``virtual_key``; none may appear in an answer or a
    log line. ``lacks``: names from :data:`OPERATIONS` the provider does not do.
    ``model``: a base model the fake accepts. ``config``: more gateway config, merged in.
    ``create_body``: more fields for every job the suite creates (the SDK's
    ``extra_body``), such as managed mode's ``portkey_options`` naming its target.
    ``fault_probe``: the call the suite makes right after ``fail_next``, which must reach
    the fake: ``"list"`` (the jobs list) or ``"retrieve"`` (a job the suite made before),
    for a provider that answers the jobs list from its own records (managed mode).
    ``add_metrics(job_id, step, train_loss)``: the fake publishes one training step's
    metrics for a job, as the provider's trainer would; the suite then expects them as
    OpenAI metrics events. Give it, or name "metrics" (or "events") in ``lacks``: a
    target with neither is refused, so a plugin cannot pass without saying which.
    ``pause_upstream(job_id)``: the provider pauses a job by itself (Fireworks' PAUSED
    state); needed only where ``resume`` works but ``pause`` is lacked, so that the suite
    has a job to resume.
    """

    virtual_key: Mapping[str, Any]
    seed_file: Callable[[bytes], str]
    set_status: Callable[[str, str], None]
    fail_next: Callable[[int, Mapping[str, str]], None]
    secrets: Collection[str]
    lacks: frozenset[str] = frozenset()
    model: str = "gpt-4o-mini"
    config: Mapping[str, Any] = field(default_factory=dict)
    create_body: Mapping[str, Any] = field(default_factory=dict)
    fault_probe: Literal["list", "retrieve"] = "list"
    add_metrics: Callable[[str, int, float], None] | None = None
    pause_upstream: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.lacks) - OPERATIONS
        if unknown:
            raise ValueError(
                f"ConformanceTarget.lacks names unknown operations {sorted(unknown)}; "
                f"known: {sorted(OPERATIONS)}"
            )
        if not self.secrets:
            raise ValueError("ConformanceTarget.secrets is empty: name the fake's credentials")
        if self.add_metrics is None and self.does("metrics"):
            raise ValueError(
                "ConformanceTarget has no add_metrics hook and lacks does not name "
                "'metrics': give the hook, or say the provider has no per-step metrics"
            )
        if self.add_metrics is not None and not self.does("metrics"):
            raise ValueError(
                "ConformanceTarget.add_metrics is given, but lacks names 'metrics' or "
                "'events': metrics are events, so say one or the other"
            )

    def does(self, operation: str) -> bool:
        # Metrics come as events and content is a file's: lacking the whole lacks the part.
        whole = {"metrics": "events", "file_content": "files"}.get(operation, operation)
        return operation not in self.lacks and whole not in self.lacks
