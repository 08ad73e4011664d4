"""The compiler's front half: capture a model, clean it up, and analyse it for cutting.

    capture -> PassManager [NameNodes, RemoveDeadNodes, CheckModel]
            -> find_exit_heads -> compute_cuts
            -> probe: run the model at two batch sizes, specs_from_samples
            -> AnalysedModel

Everything the stage builders need is in the ``AnalysedModel``; ``SubModels`` gives the same
analysis of the model cut to any subset of its exits (what a plan that drops exits compiles).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eeopt.analysis import (
    PROBE_BATCHES,
    Cuts,
    ExitHeads,
    compute_cuts,
    find_exit_heads,
    specs_from_samples,
)
from eeopt.build.sequence import find_mask, find_sequence, right_padded
from eeopt.errors import EEOptError, UnsupportedModelError, first_line
from eeopt.frontend import (
    ModelGraph,
    capture,
    example_feeds,
    input_specs,
    random_inputs,
    tile_inputs,
)
from eeopt.passes import (
    CheckModel,
    ExposeTensors,
    NameNodes,
    PassManager,
    RemoveDeadNodes,
    cut_to_outputs,
)
from eeopt.program import SequenceSpec, TensorSpec
from eeopt.runtime import make_session

__all__ = ["AnalysedModel", "SubModels", "analyse_model", "probe_tensors", "sample_feeds"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysedModel:
    """The analysed model, before stage files are written."""

    graph: ModelGraph
    heads: ExitHeads
    cuts: Cuts
    inputs: tuple[TensorSpec, ...]
    specs: dict[str, TensorSpec]
    """Every graph input, exit output, head input and carried tensor: dtype, shape, batch."""
    num_classes: int
    example: dict[str, np.ndarray] | None
    """The caller's example inputs, if any (else random inputs stand in)."""
    sequence: SequenceSpec | None = None
    """The sequence axes the runtime trims (``eeopt.build.sequence``), if any."""

    @property
    def num_exits(self) -> int:
        return len(self.cuts.stages)

    def feeds(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        """Sample inputs of ``batch`` rows: the example's rows tiled, else random."""
        return sample_feeds(self.inputs, self.example, batch, seed)


def sample_feeds(inputs: Sequence[TensorSpec], example: dict[str, np.ndarray] | None,
                 batch: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs of ``batch`` rows for a model: ``example``'s rows tiled, else random values
    (seeded) that fit ``inputs``; a random attention mask is right padding of random
    lengths (``eeopt.build.sequence``)."""
    if example is not None:
        return tile_inputs(example, batch)
    feeds = random_inputs(inputs, batch, seed=seed)
    mask = find_mask(inputs)
    return right_padded(feeds, mask.name, seed) if mask is not None else feeds


def probe_tensors(graph: ModelGraph, names: Sequence[str],
                  make_feeds: Callable[[int], dict[str, np.ndarray]]) -> dict[str, TensorSpec]:
    """Specs for ``names``: the model runs at both ``PROBE_BATCHES`` with them exposed, and
    ``eeopt.analysis.specs_from_samples`` reads dtype, shape and batch axis off the values."""
    names = list(dict.fromkeys(names))
    if not names:
        return {}
    tapped = ExposeTensors(names)(graph).graph
    session = make_session(tapped.model.SerializeToString())
    inputs = set(graph.input_names)
    fetch = [n for n in names if n not in inputs]
    samples = {}
    for b in PROBE_BATCHES:
        feeds = make_feeds(b)
        outs = dict(zip(fetch, session.run(fetch, feeds), strict=True)) if fetch else {}
        samples[b] = {n: outs[n] if n in outs else feeds[n] for n in names}
    return specs_from_samples(graph, names, samples)


def analyse_model(model: Any, *, example_inputs: Any = None,
                  dynamic_shapes: Any = None) -> AnalysedModel:
    """Capture and analyse ``model``: passes, exit heads, cuts and carried-tensor specs.
    ``dynamic_shapes``: a torch module's dynamic axes beyond the batch (``export_torch``)."""
    graph = capture(model, example_inputs=example_inputs, dynamic_shapes=dynamic_shapes)
    graph = PassManager([NameNodes(), RemoveDeadNodes(), CheckModel("the input model")])(
        graph
    ).graph
    heads = find_exit_heads(graph)
    cuts = compute_cuts(graph, heads)
    inputs = input_specs(graph)
    example = example_feeds(example_inputs, inputs)

    wanted = list(cuts.carried) + [h.output for h in heads.heads]
    wanted += [t for h in heads.heads for t in h.reads if t not in graph.input_names]
    try:
        specs = probe_tensors(graph, wanted,
                              lambda b: sample_feeds(inputs, example, b, seed=b))
    except EEOptError:
        raise
    except Exception as exc:
        raise UnsupportedModelError(
            f"running the model on sample inputs failed ({first_line(exc)}); if its inputs "
            "need particular values or sizes, pass {example_inputs}"
        ) from exc
    for s in inputs:
        specs[s.name] = s
    classes = set()
    for h in heads.heads:
        sp = specs[h.output]
        if len(sp.shape) != 2 or sp.batch_axis != 0 or not isinstance(sp.shape[1], int):
            raise UnsupportedModelError(
                f"exit output {h.output!r} has shape {list(sp.shape)}; every exit must return "
                "[batch, classes] logits"
            )
        if np.dtype(sp.dtype).kind != "f":
            raise UnsupportedModelError(f"exit output {h.output!r} is {sp.dtype}, not floats")
        classes.add(sp.shape[1])
    if len(classes) != 1:
        raise UnsupportedModelError(
            f"the exits disagree on the number of classes: {sorted(classes)}"  # type: ignore[type-var]
        )
    num_classes = int(classes.pop())  # type: ignore[arg-type]
    if num_classes < 2:
        raise UnsupportedModelError("the exits have 1 class; a gate needs at least 2")
    try:
        sequence = find_sequence(graph, inputs, sample_feeds(inputs, example, 4, seed=7),
                                 list(cuts.carried), graph.output_names)
    except EEOptError:
        raise
    except Exception as exc:  # the model runs above; a failure here only costs the trimming
        logger.info("no sequence trimming: probing padded lengths failed (%s)", first_line(exc))
        sequence = None
    return AnalysedModel(graph, heads, cuts, inputs, specs, num_classes, example, sequence)


class SubModels:
    """``sub(kept)``: the analysis of the model cut to the exits ``kept`` (indices into its
    outputs), made once per kept set."""

    def __init__(self, model: AnalysedModel) -> None:
        self.model = model
        outputs = model.graph.output_names
        self._memo: dict[tuple[int, ...], AnalysedModel] = {tuple(range(len(outputs))): model}

    def __call__(self, kept: Sequence[int]) -> AnalysedModel:
        key = tuple(kept)
        if key not in self._memo:
            outputs = self.model.graph.output_names
            sub = cut_to_outputs(self.model.graph, [outputs[k] for k in key])
            self._memo[key] = analyse_model(sub.model, example_inputs=self.model.example)
        return self._memo[key]
