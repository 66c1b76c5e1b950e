"""The bot's replies come from one registry by task, with the raw output for anything else."""

from __future__ import annotations

from mlservice.bot.replies import REPLIES, button_title, describe_output, sent_artifacts


def test_every_installed_task_has_replies() -> None:
    from mlservice.predictors.registry import discover_predictors

    tasks = {cls.task for cls in discover_predictors().values()}
    assert tasks <= set(REPLIES), tasks - set(REPLIES)


def test_a_reply_by_task() -> None:
    output = {"predictions": [{"label": "tabby", "probability": 0.5}]}
    assert describe_output("image-classification", output) == "Labels:\ntabby: 50.0%"
    assert describe_output("face-enrollment", {"label": "Ada"}) == "Enrolled the face as Ada."
    assert describe_output("text-search", {"results": []}) == "No movies found."
    assert sent_artifacts("background-removal") == ("cutout",)
    assert sent_artifacts("image-classification") is None


def test_an_unknown_task_or_shape_is_shown_as_it_is() -> None:
    assert describe_output("echo", {"echo": "HI", "_private": 1}) == "{'echo': 'HI'}"
    # A classifier whose output lacks its predictions: no crash, the output itself.
    assert describe_output("image-classification", {"top": "x"}) == "{'top': 'x'}"
    assert button_title("echo", "Echo (tests)") == "Echo (tests)"
    assert button_title("malware-detection", "Malware") == "Scan for malware"
