"""MiniLM with an exit per layer, built from a Hugging Face BertModel's own layers: checked on a
small random-weight BERT (the pretrained weights are for the demo and the benchmark)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import eeopt  # noqa: E402
from eeopt.errors import DataError  # noqa: E402
from eeopt.models.minilm import MiniLMExits, TextBatch  # noqa: E402

from topologies import token_batch  # noqa: E402

SEQ = {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}


def tiny_bert(seed: int = 0) -> MiniLMExits:
    cfg = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=3,
                                  num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=96, attn_implementation="eager")
    torch.manual_seed(seed)
    return MiniLMExits(transformers.BertModel(cfg, add_pooling_layer=False), 3).eval()


def test_an_exit_per_layer_that_ignores_padding() -> None:
    model = tiny_bert()
    ids, mask = token_batch(6, 20, seed=0, vocab=60)
    with torch.no_grad():
        outs = model(ids, mask)
        longer = model(torch.nn.functional.pad(ids, (0, 9)), torch.nn.functional.pad(mask, (0, 9)))
    assert len(outs) == 3 and all(o.shape == (6, 3) for o in outs)
    for a, b in zip(outs, longer, strict=True):  # more padding changes nothing
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_only_heads_biases_and_layernorms_train_and_round_trip() -> None:
    model = tiny_bert()
    names = set(model.trainable_parameters())
    assert {"heads.0.weight", "heads.2.bias"} <= names
    assert all(n.startswith("heads.") or n.endswith(".bias") or "LayerNorm" in n for n in names)
    assert not any(n.endswith("query.weight") for n in names)
    model.freeze_to_trainable()
    assert {n for n, p in model.named_parameters() if p.requires_grad} == names
    delta = {k: v + 1.0 for k, v in model.delta_state().items()}
    other = tiny_bert()
    other.load_delta(delta)
    for k, v in other.trainable_parameters().items():
        torch.testing.assert_close(v.detach(), delta[k])
    with pytest.raises(DataError, match="do not fit the model"):
        other.load_delta({k: v for k, v in delta.items() if k != "heads.0.bias"})


def test_text_batch_cuts_to_the_longest_row_and_masks_tokens() -> None:
    model = tiny_bert()
    wrapped = TextBatch(model, mask_id=3, special=(1, 2), mask_rate=0.5)
    ids, mask = token_batch(5, 12, seed=1, vocab=60)
    x = torch.stack([torch.nn.functional.pad(ids, (0, 20)),
                     torch.nn.functional.pad(mask, (0, 20))], dim=1)
    with torch.no_grad():
        for a, b in zip(wrapped(x), model(ids, mask), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    x[:, 0, 0] = 1  # a [CLS]-like special token is never masked
    p = wrapped.perturb(x, torch.Generator().manual_seed(0))
    changed = p[:, 0] != x[:, 0]
    assert changed.any() and (p[:, 0][changed] == 3).all()
    assert not (changed & (x[:, 1] == 0)).any() and not changed[:, 0].any()
    assert torch.equal(p[:, 1], x[:, 1])


def test_compiles_with_a_dynamic_length_and_trims_like_the_module(tmp_path: Path) -> None:
    model = tiny_bert()
    prog = eeopt.compile(model, tmp_path / "p", example_inputs=token_batch(4, 24, seed=2, vocab=60),
                         threshold=0.5, dynamic_shapes=SEQ)
    assert prog.manifest.sequence is not None and prog.trim_padding
    for rows, length in [(1, 9), (16, 40)]:
        ids, mask = token_batch(rows, length, seed=length, vocab=60)
        with torch.no_grad():
            want = model(ids, mask)
        res = prog.run({"input_ids": ids.numpy(), "attention_mask": mask.numpy()},
                       thresholds=1.0)
        np.testing.assert_allclose(res.logits, want[-1].numpy(), rtol=1e-4, atol=1e-5)


def test_jei_trains_a_text_model_on_its_cached_exit_features(tmp_path: Path) -> None:
    from eeopt.train import torch_reference, train_jei
    from eeopt.train._jei import backbone_features

    model = tiny_bert()
    ids, mask = token_batch(96, 16, seed=3, vocab=60)
    ids, mask = torch.nn.functional.pad(ids, (0, 8)), torch.nn.functional.pad(mask, (0, 8))
    with torch.no_grad():
        labels = model(ids, mask)[-1].argmax(1).numpy()
    wrapped = TextBatch(model).eval()
    x = torch.stack([ids, mask], dim=1)
    feats = backbone_features(wrapped, x, batch=40)  # cut per batch: padding changes nothing
    with torch.no_grad():
        for head, f, z in zip(model.heads, feats, model(ids, mask), strict=True):
            torch.testing.assert_close(head(f), z, rtol=0, atol=1e-5)
    before = [p.detach().clone() for p in model.heads.parameters()]
    res = train_jei(wrapped, data=({"input_ids": ids.numpy(), "attention_mask": mask.numpy()},
                                   labels), epochs=2, alternate=2, batch_size=16, lam=0.3,
                    progress=False, feature_batch=40)
    assert res.metrics["macs_fraction"] == pytest.approx([1 / 3, 2 / 3, 1.0], abs=1e-6)
    assert res.metrics["gate_phase_mean_loss"] and res.metrics["head_change_l2"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.heads.parameters(),
                                                      strict=True))
    prog = eeopt.compile(model, tmp_path / "p", example_inputs=(ids[:4], mask[:4]),
                         dynamic_shapes=SEQ, policy="jei", gates=res.gateset, threshold=0.5)
    want_exit, want_logits, _ = torch_reference(wrapped, res.gates, x, [0.5, 0.5])
    got = prog.run({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    np.testing.assert_array_equal(got.exit, want_exit)
    np.testing.assert_allclose(got.logits, want_logits, rtol=0, atol=1e-5)
