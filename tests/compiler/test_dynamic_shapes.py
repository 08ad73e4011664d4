"""The torch path keeps every axis the user marks dynamic: a text encoder compiled from one
sequence length runs at any other, exactly as the module does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import eeopt
from eeopt.errors import DataError, UsageError

from topologies import TinyEncoder, token_batch

SEQ = {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}


@pytest.fixture(scope="module")
def encoder() -> TinyEncoder:
    torch.manual_seed(0)
    return TinyEncoder().eval()


@pytest.mark.parametrize("shapes", [SEQ, ({1: "seq"}, {1: "seq"})], ids=["by-name", "tuple"])
def test_compiled_at_37_runs_at_16_and_64(encoder: TinyEncoder, shapes: object,
                                          tmp_path: Path) -> None:
    prog = eeopt.compile(encoder, tmp_path / "p", example_inputs=token_batch(4, 37, seed=1),
                         threshold=0.3, dynamic_shapes=shapes)
    assert [s.shape[1] for s in prog.manifest.inputs] == ["seq", "seq"]
    for rows, length in [(1, 16), (7, 64), (64, 16), (3, 37)]:
        ids, mask = token_batch(rows, length, seed=length + rows)
        with torch.no_grad():
            want = encoder(ids, mask)
        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        # 0.3 < 1/3 classes: every row leaves at the first exit; 1 (no random head is that sure):
        # every row runs to the last
        res = prog.run(feeds)
        assert (res.exit == 0).all()
        np.testing.assert_allclose(res.logits, want[0].numpy(), rtol=1e-4, atol=1e-5)
        res = prog.run(feeds, thresholds=1.0)
        assert (res.exit == 2).all()
        np.testing.assert_allclose(res.logits, want[-1].numpy(), rtol=1e-4, atol=1e-5)


def test_without_dynamic_shapes_the_length_is_fixed(encoder: TinyEncoder,
                                                    tmp_path: Path) -> None:
    prog = eeopt.compile(encoder, tmp_path / "p", example_inputs=token_batch(4, 37, seed=1),
                         threshold=0.5)
    ids, mask = token_batch(2, 16, seed=3)
    with pytest.raises(DataError, match="axis 1 must be 37"):
        prog.run({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})


@pytest.mark.parametrize("shapes, match", [
    ({"ids": {1: "seq"}}, "'ids', which is not an input"),
    (({1: "seq"},), "1 entries for 2 inputs"),
    ({"input_ids": {2: "seq"}}, "axis 2 is not an axis of its 2-d example"),
    ({"input_ids": {1: "two words"}}, "must be an identifier"),
    ({"input_ids": [1]}, "must be a dict"),
])
def test_bad_dynamic_shapes_are_one_line(encoder: TinyEncoder, shapes: object, match: str,
                                         tmp_path: Path) -> None:
    with pytest.raises(DataError, match=match):
        eeopt.compile(encoder, tmp_path / "p", example_inputs=token_batch(4, 37, seed=1),
                      threshold=0.5, dynamic_shapes=shapes)
    assert not (tmp_path / "p").exists()


def test_dynamic_shapes_are_for_torch_modules(tmp_path: Path) -> None:
    import onnx

    from onnx_builders import two_exit_mlp

    onnx.save(two_exit_mlp(), tmp_path / "m.onnx")
    with pytest.raises(UsageError, match="applies to a torch module"):
        eeopt.compile(tmp_path / "m.onnx", tmp_path / "p", threshold=0.5, dynamic_shapes=SEQ)
    with pytest.raises(UsageError, match="backend 'aoti' keeps only the batch dynamic"):
        eeopt.compile(TinyEncoder(), tmp_path / "q", example_inputs=token_batch(2, 8, seed=0),
                      threshold=0.5, backend="aoti", dynamic_shapes=SEQ)
