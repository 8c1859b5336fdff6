"""The report page: ``report/index.html``, one self-contained static file (styles, script, plots and
frame thumbnails inline; no server, no network) that opens in any browser.

It shows the teacher-reliability figures and plots per task type and teacher, and a filterable list
of questions (task type, teacher, kept / dropped and the reason, unanimous / split). Each question
shows thumbnails of the frames its teacher saw with their timestamps, the ground truth, and its
samples: extracted answer, both format flags, quality, agreement, kept and weight.

Large corpora: the page lists a stratified selection of about ``MAX_QUESTIONS`` questions, the same
share of each stratum (task type x kept or dropped reason, rounded up) with at least ``MIN_PER_STRATUM`` of every
stratum, chosen by a hash of the prompt id (the same questions every run), and states the totals.
Thumbnails are ``THUMB_PIXELS``-pixel JPEGs, so the page stays under about ``SIZE_LIMIT_MB`` MB.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from importlib import resources
from pathlib import Path

import polars as pl

PAGE = "index.html"
# the page's HTML, styles and script, beside this module: str.format fields in braces, literal braces doubled
TEMPLATE = "page.html"
MAX_QUESTIONS = 400
MIN_PER_STRATUM = 5
THUMB_PIXELS = 64 * 48  # per thumbnail; 8 frames ~ 10 KB of JPEG per question
SIZE_LIMIT_MB = (
    8  # measured: 2.3 MB for the demo's 408 questions (152 videos; 8 thumbnails each, 4 samples per question)
)
STAT_COLUMNS = [
    ("questions", "questions", "n"),
    ("mean_quality", "mean q", "f"),
    ("sigma_quality", "sigma q", "f"),
    ("intra_sigma", "intra sigma", "f"),
    ("outer_violation_rate", "outer viol.", "%"),
    ("task_violation_rate", "task viol.", "%"),
    ("agreement_rate", "agreement", "%"),
    ("unanimous_rate", "unanimous", "%"),
    ("kept_share", "kept", "%"),
    ("accuracy", "accuracy", "%"),
]
SAMPLE_COLUMNS = [
    "prompt_id",
    "teacher",
    "sample_index",
    "task_type",
    "question",
    "options",
    "answer",
    "video",
    "text",
    "frame_timestamps",
    "error",
]
SCORE_COLUMNS = [
    "prompt_id",
    "teacher",
    "sample_index",
    "extracted",
    "format_outer_ok",
    "format_task_ok",
    "quality",
    "agreement",
    "kept",
    "weight",
]


def batch_questions(scored: pl.DataFrame) -> pl.DataFrame:
    """The page's view of one scored batch: a row per question (prompt_id, task_type, digest, the
    SHA-256 of the prompt id that orders the selection). Built where the batch is scored, so the
    hashing is shared by the workers and the page reads no scored file whole (gathering a 10 M-row
    corpus's questions from its scored files cost rmsd-filter a fifth of its time)."""
    questions = scored.select(pl.col("prompt_id", "task_type").cast(pl.String)).unique(
        "prompt_id", keep="first", maintain_order=True
    )
    digests = [hashlib.sha256(p.encode()).digest() for p in questions["prompt_id"].to_list()]
    return questions.with_columns(digest=pl.Series(digests, dtype=pl.Binary))


def select_questions(questions: pl.DataFrame, limit: int = MAX_QUESTIONS) -> pl.DataFrame:
    """A stratified selection of ``questions`` (prompt_id, stratum, digest): all when they are at
    most ``limit``; else each stratum's share of ``limit`` (at least ``MIN_PER_STRATUM``), first by
    digest."""
    if questions.height <= limit:
        return questions
    share = limit / questions.height
    # the digest's first 8 bytes as an integer sort first (0.1 against 0.3 s on a million binaries)
    prefix = pl.col("digest").bin.slice(0, 8).bin.reinterpret(dtype=pl.UInt64, endianness="big")
    ranked = (
        questions.with_columns(_prefix=prefix)
        .sort("_prefix", "digest")
        .with_columns(_rank=pl.int_range(pl.len()).over("stratum"), _size=pl.len().over("stratum"))
    )
    keep = pl.col("_rank") < pl.max_horizontal((pl.col("_size") * share).ceil().cast(pl.Int64), pl.lit(MIN_PER_STRATUM))
    return ranked.filter(keep).drop("_prefix", "_rank", "_size")


def _thumbnails(path: Path, timestamps: list[float], mode: str) -> list[dict]:
    from PIL import Image

    from ..gen.frames import sample_frames

    frames = sample_frames(path, max_pixels=THUMB_PIXELS, mode=mode, timestamps=timestamps)
    thumbs = []
    for array, t in zip(frames.array, frames.timestamps):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=75)
        thumbs.append({"t": t, "src": "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()})
    return thumbs


def _video_resolver(samples_dir: Path, media_roots: list[Path]):
    """video (as recorded) -> absolute path, or None when it cannot be found: the prompts file's
    folder rmsd-gen read them from (its manifest), then the media roots."""
    from ..gen.frames import resolve_video
    from ..schemas.manifests import MANIFEST_FILE, recorded_paths

    manifest = samples_dir / MANIFEST_FILE
    info = json.loads(manifest.read_text()) if manifest.exists() else {}
    bases = [p.parent for p in recorded_paths("prompts_path", info, samples_dir)] if "prompts_path" in info else []
    roots = [*bases, *media_roots]

    def resolve(video: str) -> Path | None:
        for base in bases or [samples_dir]:
            try:
                path = resolve_video(video, base, roots or [base])
            except Exception:  # refused or malformed: the page says the frames are not shown
                continue
            if path.exists():
                return path
        return None

    return resolve


def page_data(
    questions: pl.DataFrame,
    scored_files: list[Path],
    sample_files: list[Path],
    dropped: pl.DataFrame,
    samples_dir: Path,
    media_roots: list[Path],
    frame_mode: str = "exact",
    limit: int = MAX_QUESTIONS,
) -> dict:
    """What the page lists: the selected ``questions`` (every batch's ``batch_questions``) with their
    samples, the thumbnails of the frames they were asked about (``frames``: key -> thumbnails; a
    question names its key), and the totals."""
    status = pl.col("reason").fill_null("kept")
    table = questions.join(dropped.select("prompt_id", "reason"), on="prompt_id", how="left").with_columns(
        status=status, stratum=pl.concat_str("task_type", status, separator=" / ")
    )
    chosen = select_questions(table, limit)
    ids = chosen["prompt_id"].to_list()
    samples, scored = pl.collect_all(
        [
            pl.scan_parquet(sample_files).filter(pl.col("prompt_id").is_in(ids)).select(SAMPLE_COLUMNS),
            pl.scan_parquet(scored_files).filter(pl.col("prompt_id").is_in(ids)),
        ]
    )
    scores = scored.select(SCORE_COLUMNS)
    chosen = chosen.join(
        scored.group_by("prompt_id").agg(
            pl.col("teacher").unique().sort().alias("teachers"),
            (pl.col("agreement_pool").min() == 1).alias("unanimous"),
        ),
        on="prompt_id",
    )
    rows = samples.join(scores, on=["prompt_id", "teacher", "sample_index"], how="left").sort(
        "prompt_id", "teacher", "sample_index"
    )
    resolve = _video_resolver(samples_dir, media_roots)
    info = {r["prompt_id"]: r for r in chosen.iter_rows(named=True)}
    decoded: dict[tuple, str] = {}  # a video's questions share the frames their teacher saw: decoded and stored once
    frames: dict[str, list[dict]] = {}
    questions = []
    for (prompt_id,), group in rows.group_by("prompt_id", maintain_order=True):
        first = group.row(0, named=True)
        seen = next((r["frame_timestamps"] for r in group.iter_rows(named=True) if r["frame_timestamps"]), None)
        path = resolve(first["video"]) if seen else None
        try:
            key = None
            if path:
                if (path, tuple(seen)) not in decoded:
                    decoded[(path, tuple(seen))] = str(len(frames))
                    frames[str(len(frames))] = _thumbnails(path, seen, frame_mode)
                key = decoded[(path, tuple(seen))]
            note = None if path else ("no frames: every sample is an error" if not seen else "video not found")
        except Exception as exc:  # an unreadable video: the page says so
            key, note = None, f"video unreadable: {exc}"
        q = info[prompt_id]
        questions.append(
            {
                "id": prompt_id,
                "task": q["task_type"],
                "teachers": q["teachers"],
                "status": q["status"],
                "unanimous": bool(q["unanimous"]),
                "question": first["question"],
                "options": first["options"] or [],
                "answer": first["answer"],
                "video": first["video"],
                "frames": key,
                "note": note,
                "samples": [
                    {
                        k: r[k]
                        for k in (
                            "teacher",
                            "sample_index",
                            "text",
                            "error",
                            "extracted",
                            "format_outer_ok",
                            "format_task_ok",
                            "quality",
                            "agreement",
                            "kept",
                            "weight",
                        )
                    }
                    for r in group.iter_rows(named=True)
                ],
            }
        )
    totals = table.group_by("stratum").len().sort("stratum")
    shown = chosen.group_by("stratum").len().rename({"len": "shown"})
    strata = totals.join(shown, on="stratum", how="left").with_columns(pl.col("shown").fill_null(0))
    return {
        "questions": questions,
        "frames": frames,
        "total": table.height,
        "shown": len(questions),
        "strata": strata.to_dicts(),
    }


def _fmt(value, kind: str) -> str:
    if value is None:
        return "-"
    return f"{int(value)}" if kind == "n" else f"{100 * value:.1f}%" if kind == "%" else f"{value:.3f}"


def _plots_inline(folder: Path) -> str:
    images = []
    for png in sorted(folder.glob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode()
        images.append(
            f'<figure><img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(png.name)}</figcaption></figure>"
        )
    return "\n".join(images)


def write_page(report_dir: Path, report: dict, data: dict) -> Path:
    """``report_dir/index.html`` from the report (``report.json``'s content) and ``page_data``'s."""
    counts = report["counts"]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in STAT_COLUMNS)
    body = "\n".join(
        f"<tr><td>{html.escape(r['task_type'])}</td><td>{html.escape(r['teacher'])}</td>"
        + "".join(f"<td>{_fmt(r.get(c), k)}</td>" for c, _, k in STAT_COLUMNS)
        + "</tr>"
        for r in report["stats"]
    )
    strata = "".join(
        f"<tr><td>{html.escape(s['stratum'])}</td><td>{s['len']}</td><td>{s['shown']}</td></tr>" for s in data["strata"]
    )
    reasons = ", ".join(f"{k}: {v}" for k, v in report["dropped_prompts"]["by_reason"].items()) or "none"
    payload = json.dumps({"frames": data["frames"], "questions": data["questions"]}, separators=(",", ":")).replace(
        "</", "<\\/"
    )
    template = (resources.files(__package__) / TEMPLATE).read_text(encoding="utf-8")
    text = template.format(
        title=html.escape(f"rmsd-filter: {report['pipeline']}"),
        summary=html.escape(
            f"{counts['samples']} samples of {counts['prompts']} questions; {counts['kept']} kept "
            f"({100 * counts['kept'] / max(counts['samples'], 1):.1f}%); tau {report['tau']}; "
            f"{report['dropped_prompts']['total']} questions without a kept sample ({reasons})."
        ),
        head=head,
        body=body,
        plots=_plots_inline(report_dir),
        strata=strata,
        selection=html.escape(
            f"{data['shown']} of {data['total']} questions shown"
            + (
                ""
                if data["shown"] == data["total"]
                else ": a stratified selection (each task type and outcome in proportion, "
                f"at least {MIN_PER_STRATUM} of each)"
            )
        ),
        payload=payload,
    )
    path = report_dir / PAGE
    path.write_text(text, encoding="utf-8")
    return path


__all__ = ["MAX_QUESTIONS", "PAGE", "page_data", "select_questions", "write_page"]
