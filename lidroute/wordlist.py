"""Word lists of many languages from the installed `wordfreq` package (code Apache-2.0, data
CC BY-SA 4.0: Wikipedia, subtitles, books, the web), read at run time and never copied here.

Read in one place because the list has two traps: asked for a language it lacks, it answers
with the nearest one it has (Swahili with English's words), and it folds numbers into tokens
such as "00", which are no words.
"""

from __future__ import annotations

import itertools


def has_words(language: str) -> bool:
    """Whether the word list has `language` itself."""
    import wordfreq

    return language in wordfreq.available_languages()


def common_words(language: str, size: int) -> list[tuple[str, float]]:
    """The `size` commonest words of `language` (no digit in them), commonest first, each with
    the share of running text it is; ValueError where the list lacks the language."""
    import wordfreq

    if not has_words(language):
        raise ValueError(f"wordfreq has no word list of {language!r}")
    # The list is binned by frequency in centibels, a band of words a bin.
    bins = wordfreq.get_frequency_list(language)
    words = ((w, i) for i, band in enumerate(bins) for w in band if not any(c.isdigit() for c in w))
    common = [(word, 10 ** (-centibels / 100)) for word, centibels in itertools.islice(words, size)]
    wordfreq.get_frequency_list.cache_clear()  # a caller keeps what it needs, not the whole list
    return common
