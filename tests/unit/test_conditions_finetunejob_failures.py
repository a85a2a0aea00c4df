"""The status of a FineTuneJob under failure and with many workers (pure: no cluster)."""

from __future__ import annotations

from typing import Any

from recops.api import conditions as c
from recops.controllers import finetunejob_status as st
from tests.unit.test_conditions_finetunejob import T0, T1, T2, body, compute, conditions_of, job, model, pod, report

INDEX = "batch.kubernetes.io/job-completion-index"


def indexed_job(workers: int, conditions: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:
    j = job(conditions, **status)
    j["spec"].update(completionMode="Indexed", completions=workers, backoffLimitPerIndex=1)
    return j


def worker(name: str, index: int, phase: str, terminated: dict[str, Any] | None = None,
           created: str = T0) -> dict[str, Any]:
    p = pod(name, phase, terminated, created)
    p["metadata"]["annotations"] = {INDEX: str(index)}
    return p


def test_missing_dependency_is_pending_with_its_reason() -> None:
    b = body()
    status = st.compute_status(b, model(b), st.Observed(job=None, waiting=(c.MISSING_DEPENDENCY, "Secret s3")),
                               now=T1)
    assert status["phase"] == "Pending" and status["message"] == "Secret s3"
    assert conditions_of(status)[c.READY] == ("False", c.MISSING_DEPENDENCY)
    assert conditions_of(status)[c.FAILED] == ("False", c.MISSING_DEPENDENCY)


def test_a_failed_attempt_with_retries_left_is_retrying_and_counted() -> None:
    failed = worker("j-a", 0, "Failed", {"exitCode": 3, "message": report(error="out of memory")})
    del failed["metadata"]["annotations"]
    status = compute(body(), job(failed=1), [failed])
    assert status["phase"] == "Pending" and status["attempts"] == 1
    assert conditions_of(status)[c.READY] == ("False", c.RETRYING)
    assert "1 failed attempt" in status["message"] and "exit code 3" in status["message"]
    assert "out of memory" in status["message"]
    # The second attempt runs: attempts 2, Running.
    second = pod("j-b", "Running", created=T1)
    status = compute(body(status=status), job(failed=1), [failed, second])
    assert status["phase"] == "Running" and status["attempts"] == 2


def test_workers_run_only_when_all_run() -> None:
    pods = [worker("j-0", 0, "Running"), worker("j-1", 1, "Pending")]
    status = compute(body(), indexed_job(2), pods)
    assert status["phase"] == "Pending" and "1/2 workers running" in status["message"]
    pods[1] = worker("j-1", 1, "Running")
    status = compute(body(), indexed_job(2), pods)
    assert status["phase"] == "Running" and status["message"] == "all 2 workers are running (attempt 1)"
    assert status["attempts"] == 1


def test_the_rank_0_report_is_the_model_even_when_another_worker_finished_last() -> None:
    rank0 = worker("j-0", 0, "Succeeded", {"exitCode": 0, "message": report()}, created=T0)
    rank1 = worker("j-1", 1, "Succeeded", {"exitCode": 0, "message": "a log tail, not a report"}, created=T1)
    complete = [{"type": "Complete", "status": "True", "lastTransitionTime": T2}]
    status = compute(body(), indexed_job(2, complete, succeeded=2, completionTime=T2), [rank0, rank1])
    assert status["phase"] == "Succeeded" and status["metrics"] == {"auc": 0.81, "logloss": 0.4}
    assert status["model"] == {"uri": "/models/ns/j-0123abcd", "version": "j-0123abcd"}
    assert status["attempts"] == 1  # two pods, one per worker: one attempt


def test_a_worker_out_of_retries_fails_the_job_with_its_error() -> None:
    pods = [worker("j-0a", 0, "Failed", {"exitCode": 1, "message": "rendezvous closed"}, created=T0),
            worker("j-1a", 1, "Failed", {"exitCode": 137, "message": report(error="CUDA out of memory")}, created=T0),
            worker("j-1b", 1, "Failed", {"exitCode": 137, "message": report(error="CUDA out of memory")}, created=T1)]
    failed = [{"type": "Failed", "status": "True", "reason": "FailedIndexes", "lastTransitionTime": T2}]
    status = compute(body(), indexed_job(2, failed, failed=3), pods)
    assert status["phase"] == "Failed" and status["attempts"] == 2
    assert conditions_of(status)[c.FAILED] == ("True", c.BACKOFF_LIMIT_EXCEEDED)
    assert "CUDA out of memory" in status["message"] and "exit code 137" in status["message"]


def test_deadline_exceeded_is_final_until_the_spec_changes() -> None:
    failed = [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "lastTransitionTime": T1}]
    status = compute(body(), job(failed, failed=0), [])
    assert st.is_final(status) and conditions_of(status)[c.FAILED] == ("True", c.DEADLINE_EXCEEDED)
    assert not st.reruns_after_deadline(body(status=status))  # same generation: final
    raised = body(status=status, generation=2)
    assert st.reruns_after_deadline(raised)
    assert not st.reruns_after_deadline(body(status=status, generation=2, suspend=True))

    rerun = st.rerun_status(raised, now=T2)
    assert st.restarting(rerun) and not st.is_final(rerun)
    assert rerun["phase"] == "Pending" and rerun["observedGeneration"] == 2
    assert conditions_of(rerun)[c.FAILED] == ("False", c.DEADLINE_RAISED)
    # The new Job's first observation ends the rerun.
    after = compute(body(status=rerun, generation=2), job(), [])
    assert not st.restarting(after) and after["phase"] == "Pending"


def test_other_failures_never_rerun() -> None:
    failed = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "lastTransitionTime": T1}]
    status = compute(body(), job(failed, failed=3), [])
    assert not st.reruns_after_deadline(body(status=status, generation=2))


def test_a_finished_trainer_stays_running_until_the_job_completes() -> None:
    """The pod succeeded but the Job controller has not marked the Job Complete yet: never back to Pending."""
    status = compute(body(), job(), [pod("j-a", "Succeeded", {"exitCode": 0, "message": report()})])
    assert status["phase"] == "Running" and "waiting for the Job to complete" in status["message"]
    two = [worker("j-0", 0, "Succeeded", {"exitCode": 0}), worker("j-1", 1, "Running")]
    assert compute(body(), indexed_job(2), two)["phase"] == "Running"


def test_what_the_api_server_refuses_is_a_rejection_not_an_error() -> None:
    import json as json_

    from recops.controllers.conditions import stored_invalid
    from recops.controllers.finetunejob import INVALID_PREFIX
    from recops.controllers.kube import ApiError, is_rejection, rejection

    invalid = ApiError(status=422, reason="Unprocessable Entity")
    invalid.body = json_.dumps({"message": 'Job.batch "j" is invalid: spec.template.spec.volumes[4].name: Invalid'})
    assert is_rejection(invalid) and "volumes[4].name" in rejection(invalid)
    untyped = ApiError(status=500, reason="Internal Server Error")
    untyped.body = '{"message":"failed to create typed patch object (ns/j; batch/v1, Kind=Job): duplicate entries"}'
    assert is_rejection(untyped)
    for status in (401, 403, 409, 429, 500, 503):
        assert not is_rejection(ApiError(status=status, reason="x")), status

    # Recorded for this generation, a rejection is not retried on resync; a new generation retries.
    b = body(generation=3)
    b["status"] = compute(b, None, [])
    assert stored_invalid(b, c.FAILED, INVALID_PREFIX) is None
    b["status"] = st.compute_status(b, None, st.Observed(job=None), now=T2, invalid=rejection(invalid))
    assert stored_invalid(b, c.FAILED, INVALID_PREFIX) == rejection(invalid)
    b["metadata"]["generation"] = 4
    assert stored_invalid(b, c.FAILED, INVALID_PREFIX) is None
