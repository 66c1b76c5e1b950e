"""How each task's models appear in a chat: the button that runs them, the reply that tells their
result, the files sent after it. One registry, by the model's task (as the web UI's result views
are, :mod:`mlservice.web.results`); a task without an entry gets the model's title and its output
as text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Output = dict[str, Any]


@dataclass(frozen=True)
class TaskReplies:
    button: str
    reply: Callable[[Output], str]
    # The artifacts worth sending to a chat; None: all of them.
    artifacts: tuple[str, ...] | None = None


def _labels(output: Output) -> str:
    lines = [f"{p['label']}: {float(p.get('probability', 0)):.1%}" for p in output["predictions"]]
    return "Labels:\n" + "\n".join(lines)


def _movies(output: Output) -> str:
    lines = [
        f"{i}. {r.get('title')}" + (f" ({r['year']})" if r.get("year") else "")
        for i, r in enumerate(output["results"], 1)
    ]
    return "Movies:\n" + "\n".join(lines) if lines else "No movies found."


def _faces(output: Output) -> str:
    faces = output["faces"]
    if not faces:
        return "No faces found."
    return "Faces:\n" + "\n".join(f"{i}. {f.get('label')}" for i, f in enumerate(faces, 1))


def _enrolled(output: Output) -> str:
    return f"Enrolled the face as {output['label']}."


def _verdict(output: Output) -> str:
    return f"Verdict: {output['verdict']} (score {output.get('score')})."


def _cut_out(output: Output) -> str:
    return "Background removed: the cut-out follows."


REPLIES: dict[str, TaskReplies] = {
    "image-classification": TaskReplies("Classify", _labels),
    "background-removal": TaskReplies("Remove background", _cut_out, artifacts=("cutout",)),
    "face-identification": TaskReplies("Identify faces", _faces),
    "face-enrollment": TaskReplies("Enroll a face", _enrolled),
    "malware-detection": TaskReplies("Scan for malware", _verdict),
    "text-search": TaskReplies("Recommend movies", _movies),
}

# Longest text a reply quotes of an output no entry knows (Telegram's limit is 4096 characters).
MAX_RAW_REPLY = 3500


def button_title(task: str, title: str) -> str:
    found = REPLIES.get(task)
    return found.button if found is not None else title


def describe_output(task: str, output: Output) -> str:
    """The result as a chat message: by its task's entry, or the output itself as text."""
    found = REPLIES.get(task)
    if found is not None:
        try:
            return found.reply(output)
        except (KeyError, TypeError, ValueError):
            pass  # not the shape the task's models give: shown as it is
    shown = {k: v for k, v in output.items() if not k.startswith("_")}
    return str(shown)[:MAX_RAW_REPLY]


def sent_artifacts(task: str) -> tuple[str, ...] | None:
    found = REPLIES.get(task)
    return found.artifacts if found is not None else None


def status_text(status: str, fraction: float | None, message: str | None) -> str:
    """The status message of a job that is not finished: queued, or working with its progress."""
    if status == "queued":
        return "Queued: the job starts as soon as the model is free."
    if status != "running":
        return f"The job is {status}."
    text = "Working on it"
    details = []
    if fraction is not None:
        details.append(f"{int(min(max(fraction, 0.0), 1.0) * 100)}%")
    if message and message.strip():
        details.append(" ".join(message.split())[:200])
    return text + (": " + ", ".join(details) if details else "...")


def unfinished_outcome(status: str, *, started: bool) -> str:
    """What the chat is told of a job that did not succeed or fail."""
    if status == "canceled":
        when = "while it ran" if started else "before it started"
        return f"The job was canceled {when}. Nothing was charged."
    if status == "aborted":
        return "The job was aborted: its deadline passed before it started. Nothing was charged."
    return f"The job is still {status}; see /jobs later."
