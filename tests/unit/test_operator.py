"""The operator's plumbing that needs no cluster: settings from flags and environment
variables, and the per-object coalescing of reconcile passes."""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading

import pytest

from recops.controllers import command
from recops.controllers.work import Coalescer


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_settings_from_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOPS_TRAINER_IMAGE", "env/trainer:1")
    monkeypatch.setenv("RECOPS_NAMESPACES", "a, b")
    monkeypatch.setenv("RECOPS_JOB_TTL_SECONDS", "300")
    args = parse(["--trainer-image", "flag/trainer:2", "--resync-seconds", "2.5", "--progress-seconds", "0"])
    config = command.config_from(args)
    assert config.builder.trainer_image == "flag/trainer:2"  # a flag wins over its variable
    assert config.namespaces == ("a", "b")
    assert config.builder.job_ttl_seconds == 300
    assert config.resync_seconds == 2.5
    assert config.progress_seconds == 0  # progress read on resync and pod changes only
    assert config.prometheus_url is None


def test_prometheus_credentials_are_files_and_go_only_to_the_operators_prometheus(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from recops.monitor.prometheus import auth_for

    assert command.config_from(parse([])).prometheus_auth is None
    monkeypatch.setenv("RECOPS_PROMETHEUS_BEARER_TOKEN_FILE", "/var/run/secrets/prometheus/token")
    config = command.config_from(parse(["--prometheus-url", "https://prom.monitoring:9090/",
                                        "--prometheus-headers", "X-Scope-OrgID=shop, X-Extra = a=b"]))
    auth = config.prometheus_auth
    assert auth is not None and auth.bearer_token_file == "/var/run/secrets/prometheus/token"
    assert auth.headers == {"X-Scope-OrgID": "shop", "X-Extra": "a=b"}
    # A MonitorPolicy naming another Prometheus must not collect the operator's token.
    assert auth_for("https://prom.monitoring:9090/prometheus", config.prometheus_url, auth) is auth
    assert auth_for("https://PROM.monitoring:9090", config.prometheus_url, auth) is auth
    for elsewhere in ("http://prom.monitoring:9090", "https://prom.monitoring:9091", "https://evil.example:9090",
                      "https://prom.monitoring.evil.example:9090"):
        assert auth_for(elsewhere, config.prometheus_url, auth) is None, elsewhere
    assert auth_for("https://prom:443", "https://prom", auth) is auth
    with pytest.raises(SystemExit, match="Name=Value"):
        command.config_from(parse(["--prometheus-headers", "no-equals-sign"]))
    with pytest.raises(SystemExit, match="exclude each other"):
        command.config_from(parse(["--prometheus-username", "recops"]))


def test_defaults_are_cluster_wide() -> None:
    config = command.config_from(parse([]))
    assert config.namespaces == () and config.builder.job_ttl_seconds is None
    assert config.liveness_endpoint and config.metrics_port == 8080


def test_help_names_every_environment_variable() -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    text = parser.format_help()
    for env in ("RECOPS_TRAINER_IMAGE", "RECOPS_SERVER_IMAGE", "RECOPS_NAMESPACES", "RECOPS_PROMETHEUS_URL",
                "RECOPS_JOB_TTL_SECONDS", "RECOPS_RESYNC_SECONDS", "RECOPS_METRICS_PORT"):
        assert env in text


def test_the_command_module_does_not_import_kopf() -> None:
    """`recops --help` stays cheap: Kopf is imported only when the operator runs."""
    code = "import sys, recops.cli; recops.cli.build_parser(); print('kopf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_coalescer_runs_one_pass_at_a_time_and_one_more_for_requests_meanwhile() -> None:
    coalescer = Coalescer()
    started = threading.Event()
    release = threading.Event()
    passes: list[str] = []
    active = 0
    most_active = 0

    def work() -> int:
        nonlocal active, most_active
        active += 1
        most_active = max(most_active, active)
        passes.append("pass")
        started.set()
        release.wait(5)
        active -= 1
        return len(passes)

    first = threading.Thread(target=coalescer.run, args=("k", work))
    first.start()
    assert started.wait(5)
    # Three requests while the first pass runs: none blocks, and they collapse into one more pass.
    assert [coalescer.run("k", work) for _ in range(3)] == [None, None, None]
    release.set()
    first.join(5)
    assert passes == ["pass", "pass"] and most_active == 1
    assert not coalescer.busy("k")
    # Other keys are independent.
    assert coalescer.run("other", lambda: 7) == 7


def test_coalescer_frees_the_key_after_an_error() -> None:
    coalescer = Coalescer()

    def boom() -> None:
        raise RuntimeError("api down")

    with pytest.raises(RuntimeError):
        coalescer.run("k", boom)
    assert not coalescer.busy("k")
    assert coalescer.run("k", lambda: "ok") == "ok"


def test_phase_gauge_counts_each_object_once() -> None:
    from recops.controllers.metrics import OperatorMetrics

    metrics = OperatorMetrics()
    metrics.set_phase("ns", "a", "Running")
    metrics.set_phase("ns", "b", "Running")
    metrics.set_phase("ns", "a", "Succeeded")
    metrics.set_phase("ns", "b", None)
    value = metrics.registry.get_sample_value
    assert value("recops_operator_finetunejobs", {"phase": "Running"}) == 0
    assert value("recops_operator_finetunejobs", {"phase": "Succeeded"}) == 1
    assert (value("process_resident_memory_bytes") or 0) > 0


def test_kopf_settings_keep_bookkeeping_under_recops_dev() -> None:
    import kopf
    from kopf._cogs.structs.references import Resource

    from recops.controllers.main import OperatorConfig, configure

    settings = kopf.OperatorSettings()
    configure(settings, OperatorConfig())
    progress = settings.persistence.progress_storage
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage) and progress.prefix == "recops.dev"
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage) and diffbase.prefix == "recops.dev"
    assert diffbase.key == "last-handled-configuration"  # the annotation: recops.dev/last-handled-configuration
    # Kopf adds its finalizer only for deletion handlers (recops has none); its name stays under recops.dev.
    assert settings.persistence.finalizer.startswith("recops.dev/")
    assert settings.scanning.disabled  # no cluster-wide CRD/namespace watch needed
    pods = Resource(group="", version="v1", plural="pods", kind="Pod", namespaced=True)
    assert list(settings.watching.label_selectors.collect(pods)) == [
        "app.kubernetes.io/managed-by=recops,recops.dev/finetunejob"
    ]


def test_a_finetunejob_event_asks_for_a_spec_pass_when_new_changed_or_first_seen() -> None:
    from recops.controllers.main import spec_pass_wanted

    def body(generation: int, observed: int | None) -> dict[str, object]:
        status = {} if observed is None else {"observedGeneration": observed}
        return {"metadata": {"generation": generation}, "status": status}

    assert spec_pass_wanted(body(1, None), first_seen=False)  # created: nothing observed yet
    assert spec_pass_wanted(body(2, 1), first_seen=False)  # the spec changed
    assert not spec_pass_wanted(body(2, 2), first_seen=False)  # our own status write, a pod event, ...
    assert spec_pass_wanted(body(2, 2), first_seen=True)  # after a start: resume it


def test_failed_passes_are_retried_with_back_off_and_timed_passes_fall_due_by_state() -> None:
    from prometheus_client import CollectorRegistry

    from recops.controllers.main import CHILD_BATCH_SECONDS, Operator, OperatorConfig
    from recops.controllers.metrics import OperatorMetrics
    from recops.controllers.schedule import Schedule
    from tests.support.fake_kube import FakeKube

    kube = FakeKube()
    clock = [100.0]
    operator = Operator(OperatorConfig(resync_seconds=60, progress_seconds=15), kube=kube,
                        metrics=OperatorMetrics(CollectorRegistry()))
    operator.schedule = schedule = Schedule(clock=lambda: clock[0])
    key = ("FineTuneJob", "ns", "a")
    kube.put({"apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "a", "namespace": "ns"},
              "spec": {"task": "click-through", "dataset": {"uri": "/d"}, "output": {"uri": "/m"}}})
    kube.fail_next("PATCH", "Job", 500, "etcd timeout")
    operator.reconcile_ftj("ns", "a", "spec", apply_children=True)  # logged, never raised into Kopf
    assert kube.obj("Job", "ns", "a") is None and schedule.backing_off(key)
    schedule.arm(key, 0.0, "resync")  # a watch event meanwhile: the retry keeps its time
    clock[0] += 4.9
    assert schedule.take_due() == []
    clock[0] += 0.1
    assert schedule.take_due() == [(key, "retry")]
    operator.run_timed(key, "retry")  # applies every child, as the failed pass was to
    assert kube.obj("Job", "ns", "a") is not None and not schedule.backing_off(key)
    clock[0] += CHILD_BATCH_SECONDS
    assert schedule.take_due() == [(key, "child")]  # the new Job's first status: one batch period later
    operator.run_timed(key, "child")
    assert kube.obj("FineTuneJob", "ns", "a")["status"]["phase"] == "Pending"
    clock[0] += 60
    assert schedule.take_due() == [(key, "resync")]  # Pending: the resync is the next timed pass

    # A second failure in a row waits twice as long.
    kube.fail_next("PATCH", "Job", 500, "etcd timeout")
    kube.fail_next("PATCH", "Job", 500, "etcd timeout")
    operator.reconcile_ftj("ns", "a", "spec", apply_children=True)
    clock[0] += 5
    assert schedule.take_due() == [(key, "retry")]
    operator.run_timed(key, "retry")
    clock[0] += 9.9
    assert schedule.take_due() == []
    clock[0] += 0.1
    assert schedule.take_due() == [(key, "retry")]

    # A child's event during the backoff brings the pass forward (what it reports must not wait out the retry), and
    # that pass succeeding ends the backoff.
    kube.fail_next("PATCH", "Job", 500, "etcd timeout")
    operator.run_timed(key, "retry")  # the third failure: the next retry is 20 s away
    assert schedule.backing_off(key)
    clock[0] += 1
    operator.batch_ftj_of_child(kube.obj("Job", "ns", "a") or {})
    clock[0] += CHILD_BATCH_SECONDS
    assert schedule.take_due() == [(key, "child")]
    operator.run_timed(key, "child")
    assert not schedule.backing_off(key)

    # By state: running ones are read for progress, final ones get no timed pass.
    assert operator.ftj_next_pass(False, "Running") == (15, "progress")
    assert operator.ftj_next_pass(False, "Pending") == (60, "resync")
    assert operator.ftj_next_pass(True, "Succeeded") == (None, "")
    # Every kind the same way: a MonitorPolicy evaluation that cannot read its policy is retried too.
    policy = ("MonitorPolicy", "ns", "p")
    kube.fail_next("GET", "MonitorPolicy", 500, "etcd timeout")
    operator.evaluate_policy("ns", "p", "spec")
    assert schedule.backing_off(policy)
    clock[0] += 5
    assert (policy, "retry") in schedule.take_due()
    operator.run_timed(policy, "retry")  # gone by now: forgotten
    assert not schedule.knows(policy)

    schedule.passed(("FineTuneJob", "ns", "b"), 15, "progress")
    schedule.arm(("FineTuneJob", "ns", "b"), 60, "resync")  # a later time never postpones an earlier one
    clock[0] += 15
    assert schedule.take_due() == [(("FineTuneJob", "ns", "b"), "progress")]


def test_a_new_jobs_events_batch_into_one_pass_that_writes_its_first_status() -> None:
    from prometheus_client import CollectorRegistry

    from recops.controllers.main import CHILD_BATCH_SECONDS, Operator, OperatorConfig
    from recops.controllers.metrics import OperatorMetrics
    from recops.controllers.schedule import Schedule
    from tests.support.fake_kube import FakeKube

    kube = FakeKube()
    clock = [100.0]
    operator = Operator(OperatorConfig(resync_seconds=60), kube=kube, metrics=OperatorMetrics(CollectorRegistry()))
    operator.schedule = schedule = Schedule(clock=lambda: clock[0])
    key = ("FineTuneJob", "ns", "a")
    kube.put({"apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "a", "namespace": "ns"},
              "spec": {"task": "click-through", "dataset": {"uri": "/d"}, "output": {"uri": "/m"}}})
    operator.reconcile_ftj("ns", "a", "spec", apply_children=True)
    job = kube.obj("Job", "ns", "a")
    assert job is not None and "status" not in (kube.obj("FineTuneJob", "ns", "a") or {})
    clock[0] += 0.5
    for event in (job, {**job, "status": {"active": 1}}):  # the Job's ADDED, then its first pod counted
        operator.batch_ftj_of_child(event)
    clock[0] += CHILD_BATCH_SECONDS - 0.6
    assert schedule.take_due() == []  # within the batch period nothing runs
    clock[0] += 0.1
    assert schedule.take_due() == [(key, "child")]  # one pass for the creating pass and both events
    operator.run_timed(key, "child")
    assert (kube.obj("FineTuneJob", "ns", "a") or {})["status"]["phase"] == "Pending"
    assert len(kube.writes_of("FineTuneJob", "PATCH", sub="status")) == 1


def test_batched_status_passes_wait_while_finetunejobs_wait_for_their_spec_pass() -> None:
    from prometheus_client import CollectorRegistry

    from recops.controllers.main import CHILD_BATCH_SECONDS, CHILD_HOLD_MAX_SECONDS, Operator, OperatorConfig
    from recops.controllers.metrics import OperatorMetrics
    from recops.controllers.schedule import Schedule
    from tests.support.fake_kube import FakeKube

    clock = [100.0]
    operator = Operator(OperatorConfig(resync_seconds=60), kube=FakeKube(),
                        metrics=OperatorMetrics(CollectorRegistry()))
    operator.schedule = schedule = Schedule(clock=lambda: clock[0])
    child, resync = ("FineTuneJob", "ns", "a"), ("FineTuneJob", "ns", "b")
    schedule.soon(child, CHILD_BATCH_SECONDS, "child")
    schedule.arm(resync, CHILD_BATCH_SECONDS, "resync")
    operator.spec_passes_waiting = 3  # a burst of creations: their Jobs come first
    clock[0] += CHILD_BATCH_SECONDS
    assert schedule.take_due(held=operator.held) == [(resync, "resync")]  # only the batched status pass waits
    clock[0] += CHILD_HOLD_MAX_SECONDS - 0.1
    assert schedule.take_due(held=operator.held) == []
    clock[0] += 0.2
    assert schedule.take_due(held=operator.held) == [(child, "child")]  # never more than the cap late
    schedule.soon(child, CHILD_BATCH_SECONDS, "child")
    clock[0] += CHILD_BATCH_SECONDS
    assert schedule.take_due(held=operator.held) == []
    operator.spec_passes_waiting = 0  # the burst is over
    assert schedule.take_due(held=operator.held) == [(child, "child")]


def test_the_finetunejob_watch_handler_counts_the_spec_pass_it_waits_for_until_it_ends_or_fails() -> None:
    import asyncio

    import kopf
    from prometheus_client import CollectorRegistry

    from recops.controllers.main import Operator, OperatorConfig, register
    from recops.controllers.metrics import OperatorMetrics
    from tests.support.fake_kube import FakeKube

    operator = Operator(OperatorConfig(), kube=FakeKube(), metrics=OperatorMetrics(CollectorRegistry()))
    registry = kopf.OperatorRegistry()
    register(registry, operator)
    [track] = [h for h in registry._watching.get_all_handlers() if h.fn.__name__ == "track_finetunejob"]
    entered, release = threading.Event(), threading.Event()

    def reconcile_ftj(namespace: str, name: str, trigger: str, apply_children: bool = False,
                      body: object = None) -> None:
        entered.set()
        release.wait(10)
        if name == "broken":
            raise RuntimeError("a pass that raises")

    operator.reconcile_ftj = reconcile_ftj  # type: ignore[method-assign]

    async def one_event(name: str) -> None:
        body = {"metadata": {"name": name, "namespace": "ns", "generation": 1}, "spec": {}}
        handler = asyncio.ensure_future(track.fn(type="ADDED", body=body, namespace="ns", name=name))
        while not entered.is_set() and not handler.done():
            await asyncio.sleep(0.01)
        assert entered.is_set() and operator.spec_passes_waiting == 1  # while its pass runs in a worker thread
        release.set()
        [outcome] = await asyncio.gather(handler, return_exceptions=True)
        assert (outcome is None) == (name != "broken")
        assert operator.spec_passes_waiting == 0
        entered.clear()
        release.clear()

    asyncio.run(one_event("ranker"))
    asyncio.run(one_event("broken"))  # a pass that raises is no longer waited for either


def test_a_spec_pass_uses_the_delivered_body_once_and_a_rerun_the_newest_state() -> None:
    from prometheus_client import CollectorRegistry

    from recops.controllers.main import Operator, OperatorConfig
    from recops.controllers.metrics import OperatorMetrics
    from tests.support.fake_kube import FakeKube

    kube = FakeKube()
    operator = Operator(OperatorConfig(), kube=kube, metrics=OperatorMetrics(CollectorRegistry()))
    body = kube.put({"apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob",
                     "metadata": {"name": "a", "namespace": "ns"},
                     "spec": {"task": "click-through", "dataset": {"uri": "/d"}, "output": {"uri": "/m"}}})
    reads: list[str] = []
    request = kube.request
    applied: list[str] = []

    def counting(method: str, path: str, *args: object, **kwargs: object) -> object:
        if method == "GET" and "/finetunejobs/" in path:
            reads.append(path)
        if method == "PATCH" and "/jobs/" in path and not applied:
            applied.append(path)
            operator.reconcile_ftj("ns", "a", "child")  # a Job event while the pass runs: one more pass after it
        return request(method, path, *args, **kwargs)  # type: ignore[arg-type]

    kube.request = counting  # type: ignore[method-assign]
    operator.watched.observe(body)  # as the FineTuneJob's watch handler does before its pass
    operator.reconcile_ftj("ns", "a", "spec", apply_children=True, body=body)
    assert kube.obj("Job", "ns", "a") is not None and applied
    # The first pass used the delivered body and created the Job; the pass run after it read the watch cache, and
    # wrote the one status: neither asked the API server for the FineTuneJob.
    assert reads == []
    assert len(kube.writes_of("FineTuneJob", "PATCH", sub="status")) == 1
    assert (operator.watched.get("FineTuneJob", "ns", "a") or {}).get("status", {}).get("phase") == "Pending"


def test_the_schedule_loop_runs_what_is_due_in_worker_threads_and_arms_the_next_pass() -> None:
    import asyncio

    from prometheus_client import CollectorRegistry

    from recops.controllers import main
    from recops.controllers.metrics import OperatorMetrics
    from tests.support.fake_kube import FakeKube

    kube = FakeKube()
    operator = main.Operator(main.OperatorConfig(resync_seconds=60), kube=kube,
                             metrics=OperatorMetrics(CollectorRegistry()))
    kube.put({"apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "a", "namespace": "ns"},
              "spec": {"task": "click-through", "dataset": {"uri": "/d"}, "output": {"uri": "/m"}}})
    key, gone = ("FineTuneJob", "ns", "a"), ("MonitorPolicy", "ns", "deleted-meanwhile")
    operator.schedule.arm(key, 0.0, "resync")
    operator.schedule.arm(gone, 0.0, "spec")
    threads: list[str] = []
    reconcile = operator.finetunejobs.reconcile

    def recording(*args: object, **kwargs: object) -> object:
        threads.append(threading.current_thread().name)
        return reconcile(*args, **kwargs)  # type: ignore[arg-type]

    operator.finetunejobs.reconcile = recording  # type: ignore[method-assign]

    async def run_a_while() -> None:
        loop_task = asyncio.create_task(operator.schedule_forever())
        deadline = asyncio.get_running_loop().time() + 10
        while (operator.schedule.knows(gone) or kube.obj("Job", "ns", "a") is None) and \
                asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        loop_task.cancel()

    asyncio.run(run_a_while())
    assert kube.obj("Job", "ns", "a") is not None  # a resync creates a missing Job
    assert threads and threading.main_thread().name not in threads
    assert not operator.schedule.knows(gone)  # its pass found it gone: forgotten
    assert operator.schedule.take_due() == []  # the next resync is 60 s away
    assert operator.schedule.knows(key) and not operator.schedule.backing_off(key)
