"""The Prefect task runner the flows map shard tasks on, chosen by ``dispatch.task_runner``.

A thread pool is the default: shard tasks of an LLM stage spend their time waiting on endpoints,
and local models are shared by the threads of one process. ``dask`` and ``ray`` hand the same
mapped tasks to a cluster (their optional packages are checked here, with the exact install line).
"""

from __future__ import annotations

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from progra_core.config import PipelineConfig

_EXTRAS = {"dask": ("prefect_dask", "DaskTaskRunner", "prefect-dask"), "ray": ("prefect_ray", "RayTaskRunner", "prefect-ray")}


def task_runner(cfg: PipelineConfig) -> TaskRunner:
    d = cfg.dispatch
    if d.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=d.max_workers)
    module, cls, package = _EXTRAS[d.task_runner]
    try:
        runner = getattr(__import__(module), cls)
    except ImportError:
        raise RuntimeError(f"dispatch.task_runner={d.task_runner!r} needs `pip install {package}` "
                           f"(or set dispatch.task_runner=thread)") from None
    if d.task_runner == "dask":
        kw = {"address": d.address} if d.address else {"cluster_kwargs": {"n_workers": d.max_workers}}
    else:  # a new local Ray cluster of its own ("local": never one already running on the machine, nor a
        # stale /tmp/ray/ray_current_cluster, which made ray.init refuse num_cpus); no dashboard process,
        # at most max_workers shard tasks at once
        kw = {"address": d.address} if d.address else {"init_kwargs": {"address": "local", "include_dashboard": False,
                                                                         "num_cpus": d.max_workers}}
    return runner(**kw)


def with_runner(flow_obj, cfg: PipelineConfig):
    """``flow_obj`` with the configured task runner (flows are decorated with the default one)."""
    return flow_obj.with_options(task_runner=task_runner(cfg))
