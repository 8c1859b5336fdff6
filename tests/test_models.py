import subprocess

from rmsd.models import load_model
from tests.conftest import BIN


def test_init_model_cli_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "m"
    done = subprocess.run(
        [BIN / "rmsd-train", "init-model", "--out", out, "--preset", "tiny"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "chat_template.jinja"):
        assert (out / name).is_file()
    model, processor = load_model(out)
    assert model.config.model_type == "qwen2_vl"
    assert model.config.text_config.head_dim == 32  # vLLM's CPU attention needs >= 32
    ids = processor.tokenizer("<think>a</think><answer>B</answer>")["input_ids"]
    assert processor.tokenizer.decode(ids) == "<think>a</think><answer>B</answer>"
    again = subprocess.run([BIN / "rmsd-train", "init-model", "--out", out], capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_presets_differ_in_size(tmp_path):
    from rmsd.models import build_model

    tiny, _ = build_model("tiny")
    demo, _ = build_model("demo")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(tiny) < count(demo) < 2_000_000
