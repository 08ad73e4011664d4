"""Pass infrastructure, after onnx-ir's: requires -> call -> ensures, explicit pipelines."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eeopt.errors import EEOptError, PassError
from eeopt.frontend import ModelGraph

__all__ = ["Pass", "PassResult", "PassManager"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassResult:
    """What a pass returns: the (possibly new) graph, whether it changed, its counters, and
    anything else it made that its caller needs (``info``; FuseGate: the gate it fused). A
    pass keeps no result on itself."""

    graph: ModelGraph
    modified: bool
    stats: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class Pass:
    """A graph-to-graph transformation.

    Subclasses implement ``call``; ``requires`` and ``ensures`` raise ``PreconditionError`` (or
    any ``EEOptError``) when the graph is not fit for the pass or the pass broke an invariant.
    """

    @property
    def name(self) -> str:
        return type(self).__name__

    def requires(self, graph: ModelGraph) -> None:  # noqa: B027 - optional hook
        """Check preconditions; raise to refuse the graph."""

    def call(self, graph: ModelGraph) -> PassResult:
        raise NotImplementedError

    def ensures(self, graph: ModelGraph) -> None:  # noqa: B027 - optional hook
        """Check postconditions on the pass's output."""

    def __call__(self, graph: ModelGraph, *, history: Sequence[str] = ()) -> PassResult:
        ran = ", ".join(history) if history else "none"
        try:
            self.requires(graph)
            result = self.call(graph)
            self.ensures(result.graph)
        except PassError:
            raise
        except EEOptError as exc:  # (the template keeps the settings it names marked)
            raise PassError(f"pass {self.name} failed (after: {ran}): {exc.template}") from exc
        except Exception as exc:  # a bug or an unexpected model: name the pass
            raise PassError(
                f"pass {self.name} failed (after: {ran}): {type(exc).__name__}: {exc}"
            ) from exc
        return result


class PassManager:
    """Runs an explicit list of passes in order, logging what each one changed. Its result
    holds each pass's stats and info under the pass's name."""

    def __init__(self, passes: Sequence[Pass]) -> None:
        self.passes = list(passes)

    def __call__(self, graph: ModelGraph) -> PassResult:
        history: list[str] = []
        modified = False
        stats: dict[str, Any] = {}
        info: dict[str, Any] = {}
        for p in self.passes:
            t0 = time.perf_counter()
            result = p(graph, history=history)
            dt = time.perf_counter() - t0
            logger.debug(
                "%s: modified=%s %s (%.1f ms)", p.name, result.modified, result.stats, dt * 1e3
            )
            graph = result.graph
            modified |= result.modified
            stats[p.name] = result.stats
            if result.info:
                info[p.name] = result.info
            history.append(p.name)
        return PassResult(graph=graph, modified=modified, stats=stats, info=info)
