"""eeopt on Ray: batch scoring on Ray Data and serving on Ray Serve.

    import ray, eeopt.ray
    scored = eeopt.ray.map_batches(ray.data.read_parquet("in/"), "program/", concurrency=4)
    scored.write_parquet("out/")      # row, exit, exit_name, logit_0, logit_1, ...

Each worker of the actor pool loads the program once. Input columns are the program's inputs
by name (plus ``row`` when the rows have ids, carried to the output). ``eeopt.ray.build_app``
is the Ray Serve application of ``eeopt serve``. The code lives in ``eeopt.serve``.
"""

from __future__ import annotations

from typing import Any

from eeopt.serve import ROW, Scorer, map_batches, score_parts, start_ray

__all__ = ["ROW", "Scorer", "build_app", "map_batches", "score_parts", "start_ray"]


def build_app(program_dir: str, **options: Any) -> Any:
    """The Ray Serve application for ``program_dir`` (see ``eeopt.serve.build_app``)."""
    from eeopt.serve import build_app as build

    return build(program_dir, **options)
