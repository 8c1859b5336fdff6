"""How a prompt row becomes chat messages: shared by the teachers (rmsd-gen) and the student
(rmsd-train), so the student is trained and evaluated on exactly the text the teachers saw."""

from __future__ import annotations

from .grammar import ANSWER_INSTRUCTIONS, FORMAT_INSTRUCTION, option_letters

DEFAULT_SYSTEM = "You are a careful video analyst."
DEFAULT_USER_TEMPLATE = "{question}\n{options}{format}\n{instruction}"


def format_options(options: list[str] | None) -> str:
    if not options:
        return ""
    return "".join(f"{letter}. {text}\n" for letter, text in zip(option_letters(options), options))


def render_user_text(
    question: str, task_type: str, options: list[str] | None = None, template: str = DEFAULT_USER_TEMPLATE
) -> str:
    """Fill a user template. Fields: {question}, {options}, {format}, {instruction}, {task_type}."""
    return template.format(
        question=question.strip(),
        options=format_options(options),
        format=FORMAT_INSTRUCTION,
        instruction=ANSWER_INSTRUCTIONS.get(task_type, ""),
        task_type=task_type,
    ).strip()


def build_messages(
    question: str,
    task_type: str,
    options: list[str] | None = None,
    system: str | None = DEFAULT_SYSTEM,
    template: str = DEFAULT_USER_TEMPLATE,
) -> list[dict]:
    """Chat messages in the Hugging Face multimodal format, with one video placeholder."""
    messages: list[dict] = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    user = render_user_text(question, task_type, options, template)
    messages.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": user}]})
    return messages
