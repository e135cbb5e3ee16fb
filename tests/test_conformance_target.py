"""What the plugin kit tells a plugin author whose ConformanceTarget contradicts itself."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.testing.target import ConformanceTarget


def _target(**extra: Any) -> ConformanceTarget:
    return ConformanceTarget(
        virtual_key={"provider": "openai"},
        seed_file=lambda content: "file-1",
        set_status=lambda job_id, status: None,
        fail_next=lambda status, headers: None,
        secrets=["sk-x"],
        **extra,
    )


@pytest.mark.parametrize("lacked", ["metrics", "events"])
def test_target_with_metrics_hook_but_lacking_metrics_is_refused(lacked: str) -> None:
    with pytest.raises(ValueError, match="add_metrics"):
        _target(add_metrics=lambda job_id, step, loss: None, lacks=frozenset({lacked}))


def test_target_neither_giving_metrics_nor_lacking_them_is_refused() -> None:
    with pytest.raises(ValueError, match="no add_metrics hook"):
        _target()


def test_target_lacking_the_whole_lacks_its_part() -> None:
    target = _target(lacks=frozenset({"events", "files"}))
    assert not target.does("metrics") and not target.does("file_content")
    full = _target(add_metrics=lambda job_id, step, loss: None)
    assert full.does("metrics") and full.does("file_content")


def test_target_naming_an_unknown_operation_is_refused() -> None:
    with pytest.raises(ValueError, match="metrcs"):
        _target(lacks=frozenset({"metrcs"}))
