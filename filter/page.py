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
from pathlib import Path

import polars as pl

PAGE = "index.html"
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


def _order(prompt_id: str) -> str:
    return hashlib.sha256(prompt_id.encode()).hexdigest()


def select_questions(questions: pl.DataFrame, limit: int = MAX_QUESTIONS) -> pl.DataFrame:
    """A stratified selection of ``questions`` (prompt_id, stratum): all when they are at most
    ``limit``; else each stratum's share of ``limit`` (at least ``MIN_PER_STRATUM``), first by hash."""
    if questions.height <= limit:
        return questions
    share = limit / questions.height
    ranked = questions.with_columns(_hash=pl.col("prompt_id").map_elements(_order, return_dtype=pl.String)).sort(
        "_hash"
    )
    ranked = ranked.with_columns(_rank=pl.int_range(pl.len()).over("stratum"), _size=pl.len().over("stratum"))
    keep = pl.col("_rank") < pl.max_horizontal((pl.col("_size") * share).ceil().cast(pl.Int64), pl.lit(MIN_PER_STRATUM))
    return ranked.filter(keep).drop("_hash", "_rank", "_size")


def _question_table(scored_files: list[Path], dropped: pl.DataFrame) -> pl.DataFrame:
    """One row per question: task type, teachers, status (kept, or the dropped reason), unanimity."""
    per_question = (
        pl.scan_parquet(scored_files)
        .group_by("prompt_id")
        .agg(
            pl.col("task_type").first(),
            pl.col("teacher").unique().sort().alias("teachers"),
            (pl.col("agreement_pool").min() == 1).alias("unanimous"),
        )
        .collect()
    )
    reasons = dropped.select("prompt_id", pl.col("reason"))
    table = per_question.join(reasons, on="prompt_id", how="left").with_columns(
        status=pl.col("reason").fill_null("kept")
    )
    return table.with_columns(stratum=pl.concat_str("task_type", "status", separator=" / ")).sort("prompt_id")


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
    scored_files: list[Path],
    sample_files: list[Path],
    dropped: pl.DataFrame,
    samples_dir: Path,
    media_roots: list[Path],
    frame_mode: str = "exact",
    limit: int = MAX_QUESTIONS,
) -> dict:
    """What the page lists: the selected questions with their samples, the thumbnails of the frames
    they were asked about (``frames``: key -> thumbnails; a question names its key), and the totals."""
    table = _question_table(scored_files, dropped)
    chosen = select_questions(table, limit)
    ids = chosen["prompt_id"].to_list()
    samples = pl.scan_parquet(sample_files).filter(pl.col("prompt_id").is_in(ids)).select(SAMPLE_COLUMNS).collect()
    scores = pl.scan_parquet(scored_files).filter(pl.col("prompt_id").is_in(ids)).select(SCORE_COLUMNS).collect()
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
            f'<figure><img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(png.name)}</figcaption></figure>'
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
    text = _TEMPLATE.format(
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
                else f": a stratified selection (each task type and outcome in proportion, at least {MIN_PER_STRATUM} of each)"
            )
        ),
        payload=payload,
    )
    path = report_dir / PAGE
    path.write_text(text, encoding="utf-8")
    return path


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0; }} td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}
td:first-child, td:nth-child(2), th {{ text-align: left; }}
figure {{ display: inline-block; margin: .3em; }} figure img {{ max-width: 420px; }}
#filters select, #filters input {{ margin-right: 1em; }}
.q {{ border: 1px solid #ddd; border-radius: 4px; padding: .5em; margin: .6em 0; }}
.q.dropped {{ border-left: 4px solid #c33; }} .q.kept {{ border-left: 4px solid #3a3; }}
.thumbs {{ display: flex; gap: 4px; flex-wrap: wrap; }} .thumbs div {{ text-align: center; font-size: 11px; }}
.samples td {{ font-size: 12px; }} .samples td.text {{ text-align: left; max-width: 40em; white-space: pre-wrap; font-family: monospace; }}
.no {{ color: #c33; font-weight: bold; }} .yes {{ color: #3a3; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<h2>Teacher reliability</h2>
<table><tr><th>task type</th><th>teacher</th>{head}</tr>
{body}</table>
{plots}
<h2>Questions</h2>
<p>{selection}.</p>
<table><tr><th>task type / outcome</th><th>questions</th><th>shown</th></tr>{strata}</table>
<div id="filters">
task type <select id="f-task"><option value="">all</option></select>
teacher <select id="f-teacher"><option value="">all</option></select>
outcome <select id="f-status"><option value="">all</option></select>
answers <select id="f-unanimous"><option value="">all</option><option value="1">unanimous</option><option value="0">split</option></select>
search <input id="f-text" placeholder="question or answer text">
<span id="count"></span>
</div>
<div id="list"></div>
<script type="application/json" id="questions">{payload}</script>
<script>
const DATA = JSON.parse(document.getElementById("questions").textContent);
const Q = DATA.questions, FRAMES = DATA.frames;
const el = (tag, attrs, ...kids) => {{ const e = document.createElement(tag); Object.assign(e, attrs || {{}});
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k))); return e; }};
const fill = (id, values) => {{ const s = document.getElementById(id); for (const v of [...new Set(values)].sort()) s.append(el("option", {{value: v, textContent: v}})); }};
fill("f-task", Q.map(q => q.task)); fill("f-teacher", Q.flatMap(q => q.teachers)); fill("f-status", Q.map(q => q.status));
const num = v => v === null || v === undefined ? "-" : (typeof v === "number" ? v.toFixed(3) : v);
const flag = v => el("span", {{className: v ? "yes" : "no", textContent: v === null || v === undefined ? "-" : (v ? "yes" : "no")}});
function card(q) {{
  const div = el("div", {{className: "q " + (q.status === "kept" ? "kept" : "dropped")}});
  div.append(el("div", {{}}, el("b", {{}}, q.id), ` · ${{q.task}} · ${{q.status}} · ${{q.unanimous ? "unanimous" : "split"}} · teachers: ${{q.teachers.join(", ")}} · video ${{q.video}}`));
  div.append(el("div", {{}}, "Q: " + q.question));
  if (q.options.length) div.append(el("div", {{}}, "options: " + q.options.join(" | ")));
  div.append(el("div", {{}}, "ground truth: ", el("b", {{}}, q.answer)));
  const thumbs = el("div", {{className: "thumbs"}});
  for (const t of FRAMES[q.frames] || []) thumbs.append(el("div", {{}}, el("img", {{src: t.src, alt: "frame at " + t.t + " s"}}), el("br"), t.t.toFixed(2) + " s"));
  if (q.note) thumbs.append(el("i", {{}}, q.note));
  div.append(thumbs);
  const table = el("table", {{className: "samples"}});
  table.append(el("tr", {{}}, ...["teacher", "k", "response", "extracted", "outer format", "task format", "quality", "agreement", "kept", "weight"].map(h => el("th", {{}}, h))));
  for (const s of q.samples) table.append(el("tr", {{}}, el("td", {{}}, s.teacher), el("td", {{}}, s.sample_index),
    el("td", {{className: "text"}}, s.error ? "error: " + s.error : s.text), el("td", {{}}, s.extracted ?? "-"), el("td", {{}}, flag(s.format_outer_ok)),
    el("td", {{}}, flag(s.format_task_ok)), el("td", {{}}, num(s.quality)), el("td", {{}}, num(s.agreement)), el("td", {{}}, flag(s.kept)), el("td", {{}}, num(s.weight))));
  div.append(table);
  return div;
}}
function render() {{
  const v = id => document.getElementById(id).value;
  const text = v("f-text").toLowerCase();
  const shown = Q.filter(q => (!v("f-task") || q.task === v("f-task")) && (!v("f-teacher") || q.teachers.includes(v("f-teacher")))
    && (!v("f-status") || q.status === v("f-status")) && (!v("f-unanimous") || String(+q.unanimous) === v("f-unanimous"))
    && (!text || (q.question + " " + q.answer + " " + q.samples.map(s => s.text || "").join(" ")).toLowerCase().includes(text)));
  const list = document.getElementById("list"); list.replaceChildren(...shown.slice(0, 200).map(card));
  document.getElementById("count").textContent = `${{shown.length}} match` + (shown.length > 200 ? " (first 200 listed)" : "");
}}
for (const id of ["f-task", "f-teacher", "f-status", "f-unanimous", "f-text"]) document.getElementById(id).addEventListener("input", render);
render();
</script>
</body></html>
"""

__all__ = ["MAX_QUESTIONS", "PAGE", "page_data", "select_questions", "write_page"]
