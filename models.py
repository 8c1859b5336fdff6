"""Small Qwen2-VL-architecture models built from configs, and the one loader for every checkpoint.

Shared by rmsd-gen (teachers) and rmsd-train (students), so it lives beside the stages and imports
none of them (tests/test_boundaries.py): a public, stage-neutral module. It also knows where a
Qwen-VL model keeps its vision tower (``vision_tower``, ``copy_vision_tower``: a student that
starts with a teacher's encoder, and the auxiliary visual loss of rmsd-train).

No model hub is reachable in CI or on the demo machine: the demo's teacher and student and the
tests use models written here (random weights, a byte-level BPE tokenizer trained on the
benchmark's own vocabulary, the Qwen2-VL special tokens and a chat template). ``load_model``
takes these folders and any Hugging Face checkpoint folder alike.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
FORMAT_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# text: hidden, intermediate, layers, heads, kv heads; vision: depth, embed_dim, heads
PRESETS = {
    "tiny": dict(hidden=64, intermediate=128, layers=2, heads=2, kv_heads=1, v_depth=1, v_embed=32, v_heads=2),
    "demo": dict(hidden=128, intermediate=384, layers=2, heads=4, kv_heads=2, v_depth=2, v_embed=64, v_heads=2),
    # ~100 M parameters: large enough that compute, not overhead, dominates (bench/gen.py)
    "bench": dict(hidden=768, intermediate=3072, layers=12, heads=24, kv_heads=8, v_depth=4, v_embed=384, v_heads=6),
}
HEAD_DIM = 32  # vLLM's CPU attention supports 32 and up
MIN_PIXELS, MAX_PIXELS = 56 * 56, 112 * 112


def _tokenizer_corpus() -> list[str]:
    """Text the tokenizer is trained on: every word the benchmark, prompts and grammar use."""
    from . import synth
    from .schemas import grammar, prompting

    lines = [prompting.DEFAULT_SYSTEM, grammar.FORMAT_INSTRUCTION, *grammar.ANSWER_INSTRUCTIONS.values()]
    for i in range(300):
        scene = synth.make_scene(12345, i)
        for row in synth.make_questions(scene, synth.video_rng(1, i)):
            lines += [row["question"], row["answer"], prompting.format_options(row["options"])]
    lines += [" ".join(synth.WORDS), " ".join(w.upper() for w in synth.WORDS), "0123456789 . , [ ] : - s"]
    lines += ["the answer is", "I see a shape moving", "Answer: B", "(A) (B) (C) (D)"]
    return lines


def build_tokenizer(vocab_size: int = 1024):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    fast.add_tokens(FORMAT_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(preset: str = "tiny", seed: int = 0):
    """A randomly initialised Qwen2-VL model, its tokenizer and processor."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    p = PRESETS[preset]
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    half = HEAD_DIM // 2
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=p["hidden"],
            intermediate_size=p["intermediate"],
            num_hidden_layers=p["layers"],
            num_attention_heads=p["heads"],
            num_key_value_heads=p["kv_heads"],
            head_dim=HEAD_DIM,
            max_position_embeddings=4096,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [half // 4, 3 * half // 8, 3 * half // 8],
            },
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            depth=p["v_depth"],
            embed_dim=p["v_embed"],
            num_heads=p["v_heads"],
            hidden_size=p["hidden"],
            mlp_ratio=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    pixels = dict(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        video_processor=Qwen2VLVideoProcessor(**pixels, cap_pixels_per_frame=True),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


def init_model(
    out: str | os.PathLike, preset: str = "tiny", seed: int = 0, vision_from: str | os.PathLike | None = None
) -> Path:
    """Write a model folder (weights, config, tokenizer, processor); atomic: the folder appears whole.
    ``vision_from``: a checkpoint of the same preset whose vision tower the new model starts with."""
    import shutil

    from .schemas.files import match_umask, temp_dir_beside

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model, processor = build_model(preset, seed)
    if vision_from is not None:
        copy_vision_tower(load_model(vision_from)[0], model)
    tmp = temp_dir_beside(out)  # mode 0777 less the umask, as the folder keeps it when renamed
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "RMSD_PRESET").write_text(f"{preset} seed={seed}\n")
        match_umask(tmp)  # safetensors writes the weights 0600
        if out.exists():
            raise FileExistsError(f"{out} already exists")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def ensure_model(path: str | os.PathLike, init: str | None) -> Path:
    """The model folder, built from ``init``'s preset first if it is not there yet."""
    path = Path(path)
    if path.is_dir():
        return path
    if init is None:
        raise FileNotFoundError(f"model folder {path} does not exist")
    # said out loud: a mistyped path or RMSD_HOME otherwise turns into an untrained model silently
    print(
        f"rmsd: {path} does not exist: building the {init!r} preset there (random weights, from its config)",
        file=sys.stderr,
        flush=True,
    )
    try:
        return init_model(path, init)
    except FileExistsError:  # another process built it meanwhile
        return path


def load_model(path: str | os.PathLike, dtype: str = "float32", device: str = "cpu"):
    """Load any Hugging Face image-text-to-text checkpoint folder and its processor (local files only);
    a checkpoint that misses weights of the model, or holds others, is refused."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, info = AutoModelForImageTextToText.from_pretrained(
        str(path), dtype=getattr(torch, dtype), local_files_only=True, output_loading_info=True
    )
    partial = {
        name: keys for name in ("missing_keys", "unexpected_keys", "mismatched_keys") if (keys := info.get(name))
    }
    if partial:  # transformers logs these and goes on with random weights where keys were missed: refused here
        details = "; ".join(
            f"{len(keys)} {name.replace('_', ' ')} (e.g. {sorted(map(str, keys))[0]})" for name, keys in partial.items()
        )
        raise ValueError(f"{path}: the checkpoint's weights do not match its model class: {details}")
    processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
    return model.to(device).eval(), processor


def vision_tower(model) -> torch.nn.Module:
    """The vision encoder of a Qwen-VL-family model (its output's ``pooler_output`` holds the merged tokens)."""
    inner = getattr(model, "model", model)
    visual = getattr(inner, "visual", None)
    if visual is None:
        raise ValueError(
            f"{type(model).__name__} has no vision tower at .model.visual (the auxiliary visual loss and "
            "--vision-from need a Qwen-VL-family model)"
        )
    return visual


def copy_vision_tower(source, target) -> int:
    """Copy the vision tower (patch embedding, blocks and merger) of ``source`` into ``target``: a
    from-scratch student that starts with a visually trained encoder, as a pretrained VLM would.
    Returns the number of tensors copied."""
    src, dst = vision_tower(source).state_dict(), vision_tower(target).state_dict()
    mismatched = [k for k in dst if k not in src or src[k].shape != dst[k].shape]
    if mismatched:
        raise ValueError(
            f"vision towers differ ({len(mismatched)} tensors, e.g. {mismatched[0]}): build the student with the same "
            "vision config"
        )
    vision_tower(target).load_state_dict(src)
    return len(src)
