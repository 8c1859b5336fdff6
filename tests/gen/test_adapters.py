import json

import pytest

from rmsd.gen.adapters import load_prompts
from rmsd.schemas.tables import SchemaError

VIDEO_R1 = [
    {
        "problem_id": 1,
        "problem": "<video>What is the man holding?",
        "data_type": "video",
        "problem_type": "multiple choice",
        "options": ["A. a cup", "B. a phone", "C. a pen"],
        "solution": "<answer>B</answer>",
        "path": "./clips/a.mp4",
        "data_source": "LLaVA-Video",
    },
    {
        "problem_id": 2,
        "problem": "How many cars pass?",
        "data_type": "video",
        "problem_type": "numerical",
        "solution": "<answer>3</answer>",
        "path": "clips/b.mp4",
    },
    {
        "problem_id": 3,
        "problem": "Read the sign.",
        "data_type": "video",
        "problem_type": "OCR",
        "solution": "<answer>STOP</answer>",
        "path": "clips/c.mp4",
    },
    {
        "problem_id": 4,
        "problem": "Why does it fall?",
        "data_type": "video",
        "problem_type": "free-form",
        "solution": "<answer>It slips.</answer>",
        "path": "clips/d.mp4",
    },
    {
        "problem_id": 5,
        "problem": "Which image?",
        "data_type": "image",
        "problem_type": "multiple choice",
        "options": ["A. x", "B. y"],
        "solution": "<answer>A</answer>",
        "path": "img.png",
    },
    {
        "problem_id": 6,
        "problem": "Solve",
        "data_type": "video",
        "problem_type": "math",
        "solution": "<answer>2</answer>",
        "path": "e.mp4",
    },
]

LLAVA = [
    {
        "id": "clip7",
        "video": "clips/f.mp4",
        "data_source": "academic",
        "conversations": [
            {
                "from": "human",
                "value": "<image>\nWhat colour is the car?\nA. red\nB. blue\nAnswer with the option's letter.",
            },
            {"from": "gpt", "value": "B."},
            {"from": "human", "value": "Describe the scene."},
            {"from": "gpt", "value": "A blue car drives past a tree."},
        ],
    },
    {"id": "img1", "image": "x.png", "conversations": [{"from": "human", "value": "?"}, {"from": "gpt", "value": "!"}]},
]


def test_video_r1_json_maps_task_types_and_refuses_with_reasons(tmp_path):
    path = tmp_path / "r1.json"
    path.write_text(json.dumps(VIDEO_R1))
    rows, refused = load_prompts(path)
    by_id = {r["prompt_id"]: r for r in rows}
    assert by_id["1"]["task_type"] == "multiple_choice"
    assert by_id["1"]["options"] == ["a cup", "a phone", "a pen"] and by_id["1"]["answer"] == "B"
    assert by_id["1"]["question"] == "What is the man holding?" and by_id["1"]["video"] == "./clips/a.mp4"
    assert [by_id[i]["task_type"] for i in "234"] == ["numerical", "ocr", "open_ended"]
    assert by_id["4"]["answer"] == "It slips."
    reasons = sorted(r.reason for r in refused)
    assert len(refused) == 2
    assert any("data_type 'image'" in r for r in reasons) and any("problem_type 'math'" in r for r in reasons)


def test_video_r1_jsonl(tmp_path):
    path = tmp_path / "r1.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in VIDEO_R1[:2]) + "\n")
    rows, refused = load_prompts(path)
    assert [r["prompt_id"] for r in rows] == ["1", "2"] and not refused


def test_llava_video_conversations_become_one_prompt_per_turn(tmp_path):
    path = tmp_path / "llava.json"
    path.write_text(json.dumps(LLAVA))
    rows, refused = load_prompts(path)
    assert [r["prompt_id"] for r in rows] == ["clip7-0", "clip7-1"]
    mc, free = rows
    assert mc["task_type"] == "multiple_choice" and mc["options"] == ["red", "blue"] and mc["answer"] == "B"
    assert "A. red" not in mc["question"] and "<image>" not in mc["question"]
    assert free["task_type"] == "open_ended" and free["answer"].startswith("A blue car")
    assert len(refused) == 1 and "image-only" in refused[0].reason


def test_bad_prompt_files_fail_clearly(tmp_path):
    (tmp_path / "p.csv").write_text("a,b")
    with pytest.raises(SchemaError, match="unsupported prompts format"):
        load_prompts(tmp_path / "p.csv")
    (tmp_path / "bad.jsonl").write_text('{"prompt_id": 1}\n{oops\n')
    with pytest.raises(SchemaError, match="line 2: not JSON"):
        load_prompts(tmp_path / "bad.jsonl")
    dup = [{"prompt_id": "x", "video": "a.mp4", "question": "q", "task_type": "ocr"}] * 2
    (tmp_path / "dup.json").write_text(json.dumps(dup))
    with pytest.raises(SchemaError, match="row 1: duplicate prompt_id 'x'"):
        load_prompts(tmp_path / "dup.json")
    with pytest.raises(FileNotFoundError):
        load_prompts(tmp_path / "nope.parquet")
