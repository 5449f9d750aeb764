"""How a problem becomes what the model reads: a completion-mode text, or chat messages for the tokenizer's template.

A post-trained model answers well only in the frame it was trained on. A base or SFT model like the demo one reads a
plain text frame (``Q: {question}\\nA: ``) and continues it; an instruct or reasoning model expects its tokenizer's
chat template (system turn, user turn, generation prompt) and writes a long chain of thought that a blank-line stop
would cut. So the frame is a setting (:class:`PromptFormat`), and a prompt is a typed value: a ``str`` in completion
mode (exactly what the pipeline always sent, so stored request hashes stay valid) or a :class:`ChatPrompt` in chat
mode, which the engine renders with the checkpoint's own chat template (in-process) or sends to
``/v1/chat/completions`` (remote). Interventions stay pure functions that compose a prompt from the same three
parts in either mode:

* few-shot exemplars: text blocks before the question, or earlier user/assistant turns;
* a solution prefix: text appended after the frame, or a final assistant message the model continues
  (``continue_final_message``, no generation prompt);
* the system prompt: the system turn (chat only; a completion-mode frame has no place for one).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from fixability_dag.core.problems import PROMPT_TEMPLATE, Problem

QUESTION_PLACEHOLDER = "{question}"
CHAT_TEMPLATE_DEFAULT = QUESTION_PLACEHOLDER
"""The user turn in chat mode when no template is set: the question alone (the chat template adds the frame)."""
COMPLETION_STOP = ("\n\n",)
"""Completion mode's default stop: the demo frame ends an answer with a blank line. Chat mode stops at EOS only."""
ROLES = ("system", "user", "assistant")


@dataclasses.dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"chat role must be one of {ROLES}, got {self.role!r}")


@dataclasses.dataclass(frozen=True)
class ChatPrompt:
    """A conversation for the checkpoint's chat template. When the last message is the assistant's, the model
    continues it (a solution prefix) instead of starting a new assistant turn."""

    messages: tuple[ChatMessage, ...]

    def __post_init__(self) -> None:
        if not self.messages or self.messages[-1].role == "system":
            raise ValueError("a chat prompt needs a user or assistant message last")

    @property
    def continue_final_message(self) -> bool:
        return self.messages[-1].role == "assistant"

    @property
    def add_generation_prompt(self) -> bool:
        return not self.continue_final_message

    def as_dicts(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]

    def __str__(self) -> str:  # logs and error messages
        return json.dumps(self.as_dicts(), ensure_ascii=False)


Prompt = str | ChatPrompt
"""A completion-mode text or a chat conversation."""


def continued(prompt: Prompt, text: str) -> Prompt:
    """``prompt`` with ``text`` already written by the model (a tool loop's continuation): appended to a text
    prompt; in chat mode, added to the final assistant message the model continues (opened if there is none)."""
    if isinstance(prompt, str):
        return prompt + text
    if not text:
        return prompt
    *head, last = prompt.messages
    if last.role == "assistant":
        return ChatPrompt((*head, ChatMessage("assistant", last.content + text)))
    return ChatPrompt((*prompt.messages, ChatMessage("assistant", text)))


def answer_so_far(prompt: Prompt) -> str:
    """The part of ``prompt`` the model's answer continues: a text prompt itself; a chat prompt's final assistant
    message (a solution prefix), else nothing."""
    if isinstance(prompt, str):
        return prompt
    return prompt.messages[-1].content if prompt.continue_final_message else ""


def prompt_payload(prompt: Prompt) -> str | dict:
    """A JSON-able form of a prompt for request hashes: a text prompt is itself (hashes of completion-mode requests
    are what they always were), a chat prompt its messages and whether the last one is continued."""
    if isinstance(prompt, str):
        return prompt
    return {"messages": prompt.as_dicts(), "continue_final_message": prompt.continue_final_message}


@dataclasses.dataclass(frozen=True)
class PromptFormat:
    """The ``chat``, ``prompt_template``, ``system_prompt`` and ``stop`` settings, resolved.

    ``template`` frames a question (``{question}`` is replaced literally, so LaTeX braces such as ``\\boxed{}`` in
    an instruction are safe); ``None`` means ``Q: {question}\\nA: `` in completion mode and the bare question in chat
    mode. ``stop`` ``None`` means ``"\\n\\n"`` in completion mode and EOS only in chat mode; ``()`` is EOS only.
    """

    chat: bool = False
    template: str | None = None
    system_prompt: str | None = None
    stop: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.template is not None and QUESTION_PLACEHOLDER not in self.template:
            raise ValueError(f"prompt_template must contain {QUESTION_PLACEHOLDER}, got {self.template!r}")
        if self.system_prompt is not None and not self.chat:
            raise ValueError("system_prompt needs chat: true (a completion-mode frame has no system turn)")
        if self.stop is not None and any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must be a list of non-empty strings, got {list(self.stop)!r}")

    @property
    def frame(self) -> str:
        if self.template is not None:
            return self.template
        return CHAT_TEMPLATE_DEFAULT if self.chat else PROMPT_TEMPLATE

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is not None:
            return tuple(self.stop)
        return () if self.chat else COMPLETION_STOP

    def question(self, problem: Problem) -> str:
        return self.frame.replace(QUESTION_PLACEHOLDER, problem.question)

    def render(self, problem: Problem, exemplars: Sequence[Problem] = (), prefix: str = "",
               instruction: str | None = None) -> Prompt:
        """The prompt for ``problem``, after solved ``exemplars``, with the answer begun by ``prefix``.

        ``instruction`` is a prompt variant's text: in chat mode the system turn (after the configured system
        prompt, if any), in completion mode a line before everything else (the frame has no system turn).

        Completion mode gives exactly the texts the pipeline built before prompt formats existed (frame + reference
        solution + blank line per exemplar, then the frame, then the prefix), so their request hashes are unchanged.
        """
        if not self.chat:
            shots = "".join(self.question(ex) + ex.reference_solution + "\n\n" for ex in exemplars)
            return (instruction + "\n" if instruction else "") + shots + self.question(problem) + prefix
        system = "\n\n".join(t for t in (self.system_prompt, instruction) if t)
        messages = [ChatMessage("system", system)] if system else []
        for ex in exemplars:
            messages += [ChatMessage("user", self.question(ex)), ChatMessage("assistant", ex.reference_solution)]
        messages.append(ChatMessage("user", self.question(problem)))
        if prefix:
            messages.append(ChatMessage("assistant", prefix))
        return ChatPrompt(tuple(messages))
