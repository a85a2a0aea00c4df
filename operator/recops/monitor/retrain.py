"""Whether a MonitorPolicy may retrain now: pure functions over what the policy observed.

The FineTuneJobs the policy created are the source of truth (they survive an operator
restart); the status' record of retrains adds those already pruned by historyLimit, so that
cooldown and maxPerDay hold even when history is kept short.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from recops.api.common import format_time, parse_duration
from recops.api.monitorpolicy import RetrainSpec

DAY = timedelta(hours=24)


@dataclass(frozen=True)
class OwnedJob:
    """A FineTuneJob the policy created."""

    name: str
    created_at: datetime
    finished: bool  # Complete or Failed: nothing in flight any more
    sequence: int = 0  # the policy's retrain number (annotation), for the next name


@dataclass(frozen=True)
class RetrainDecision:
    create: bool
    reason: str  # why (not): shown in Events and the Retraining condition
    blocked_by: str | None = None  # no-breach, report-only, in-flight, mid-canary, cooldown, max-per-day


def retrain_times(jobs: Iterable[OwnedJob], recorded: Mapping[str, datetime]) -> dict[str, datetime]:
    """Creation time of every retrain known, by FineTuneJob name (jobs win over records)."""
    times = dict(recorded)
    times.update({job.name: job.created_at for job in jobs})
    return times


def decide_retrain(
    *,
    breached: Sequence[str],
    retrain: RetrainSpec | None,
    jobs: Sequence[OwnedJob],
    recorded: Mapping[str, datetime],
    target_mid_canary: bool,
    now: datetime,
) -> RetrainDecision:
    """Create a FineTuneJob now? Never without a breach, never two in flight, never mid-canary,
    never within the cooldown of the last one, never more than maxPerDay in 24 hours."""
    if not breached:
        return RetrainDecision(False, "no rule is breached", "no-breach")
    rules = ", ".join(breached)
    if retrain is None:
        return RetrainDecision(False, f"{rules} breached; the policy has no retrain section (report only)",
                               "report-only")
    running = sorted(job.name for job in jobs if not job.finished)
    if running:
        return RetrainDecision(False, f"{rules} breached; FineTuneJob {running[0]} is still in flight", "in-flight")
    if target_mid_canary:
        return RetrainDecision(False, f"{rules} breached; the target is mid-canary, retraining waits for its outcome",
                               "mid-canary")
    times = retrain_times(jobs, recorded)
    if times:
        last_name, last = max(times.items(), key=lambda item: item[1])
        cooldown = parse_duration(retrain.cooldown)
        if now - last < cooldown:
            until = format_time(last + cooldown)
            return RetrainDecision(False, f"{rules} breached; cooldown {retrain.cooldown} after {last_name} "
                                          f"lasts until {until}", "cooldown")
    today = [t for t in times.values() if now - t < DAY]
    if len(today) >= retrain.max_per_day:
        return RetrainDecision(False, f"{rules} breached; {len(today)} retrains in the last 24h reach "
                                      f"maxPerDay {retrain.max_per_day}", "max-per-day")
    return RetrainDecision(True, f"{rules} breached")


def next_sequence(jobs: Iterable[OwnedJob], recorded_count: int = 0) -> int:
    """The number of the next retrain: one past the highest the policy's jobs carry.

    Deterministic for what exists, so a restarted operator computes the same name for the
    same retrain (and the API server refuses a second object of that name).
    """
    return max([recorded_count, *(job.sequence for job in jobs)]) + 1


def jobs_to_prune(jobs: Sequence[OwnedJob], history_limit: int) -> list[str]:
    """The finished jobs beyond historyLimit, oldest first (unfinished ones are never pruned)."""
    finished = sorted((job for job in jobs if job.finished), key=lambda job: (job.created_at, job.name))
    excess = len(finished) - history_limit
    return [job.name for job in finished[:excess]] if excess > 0 else []


def recent_records(records: Sequence[Mapping[str, str]], now: datetime) -> list[Mapping[str, str]]:
    """status.retrains entries of the last 24 hours."""
    kept = []
    for record in records:
        created = _parse(record.get("createdAt"))
        if created is not None and now - created < DAY:
            kept.append(record)
    return kept


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
