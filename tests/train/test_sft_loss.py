"""The weighted SFT loss, checked against a hand computation, with and without gradient accumulation."""

import pytest
import torch

from rmsd.models import load_model
from rmsd.schemas.config import FramesConfig
from rmsd.train.collate import IGNORE, FrameCache, VideoSFTCollator
from rmsd.train.config import DistillSFTConfig
from rmsd.train.data import sft_dataset, video_base
from rmsd.train.sft import WeightedSFTTrainer


@pytest.fixture(scope="module")
def setup(tiny_model, bench_dir, tmp_path_factory):
    model, processor = load_model(tiny_model)
    prompts = bench_dir / "prompts.parquet"
    dataset = sft_dataset("gt", prompts, split=None)
    collator = VideoSFTCollator(processor, FrameCache(FramesConfig(num_frames=4), video_base("gt", prompts)))
    out = tmp_path_factory.mktemp("sft")
    trainer = WeightedSFTTrainer(
        model=model,
        args=DistillSFTConfig(output_dir=str(out), mode="weighted"),
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
    )
    examples = [dict(dataset[i], weight=w) for i, w in zip(range(3), (0.25, 0.75, 2.0))]
    return trainer, collator, examples


def by_hand(model, batch):
    """sum_i w_i sum_t -log p(y_it) / sum_i w_i n_i, from the model's logits."""
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weights")}
    logits = model(**inputs).logits
    numerator, denominator = 0.0, 0.0
    for i in range(logits.shape[0]):
        for t in range(logits.shape[1] - 1):
            target = int(batch["labels"][i, t + 1])
            if target == IGNORE:
                continue
            numerator = numerator - batch["weights"][i] * torch.log_softmax(logits[i, t].float(), -1)[target]
            denominator += float(batch["weights"][i])
    return numerator / denominator


def test_labels_cover_only_the_response(setup):
    trainer, collator, examples = setup
    batch = collator(examples[:2])
    tokenizer = collator.tokenizer
    for i, example in enumerate(examples[:2]):
        kept = batch["labels"][i][batch["labels"][i] != IGNORE]
        assert tokenizer.decode(kept) == example["response"] + tokenizer.eos_token


def test_weighted_loss_equals_the_hand_computation(setup):
    trainer, collator, examples = setup
    batch = collator(examples)
    model = trainer.model
    expected = by_hand(model, batch)
    loss = trainer.compute_loss(model, dict(batch))
    assert loss.item() == pytest.approx(float(expected.detach()), rel=1e-5)
    # all weights 1: the plain token-mean cross-entropy of transformers
    plain = collator([dict(e, weight=1.0) for e in examples])
    reference = model(**{k: v for k, v in plain.items() if k != "weights"}).loss
    assert trainer.compute_loss(model, dict(plain)).item() == pytest.approx(reference.item(), rel=1e-5)


def test_gradient_accumulation_gives_the_full_batch_gradient(setup):
    trainer, collator, examples = setup
    model = trainer.model
    full = collator(examples)
    micro = [collator(examples[:1]), collator(examples[1:])]
    window = trainer._get_num_items_in_batch(micro, torch.device("cpu"))
    assert window.item() == pytest.approx(trainer._get_num_items_in_batch([full], torch.device("cpu")).item())

    def grads(batches, num_items):
        model.zero_grad()
        total = 0.0
        for b in batches:
            loss = trainer.compute_loss(model, dict(b), num_items_in_batch=num_items)
            loss.backward()
            total += loss.item()
        return total, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    full_loss, full_grads = grads([full], None)
    accumulated_loss, accumulated_grads = grads(micro, window)
    assert accumulated_loss == pytest.approx(full_loss, rel=1e-5)
    assert accumulated_loss == pytest.approx(float(by_hand(model, full).detach()), rel=1e-5)
    for a, b in zip(full_grads, accumulated_grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    assert trainer.loss_is_scaled_for_ga  # the Trainer must not divide by the accumulation steps again
