"""A small English stop-word list, used by ``--skip-stopwords``.

Function words only (articles, pronouns, auxiliaries, prepositions, conjunctions): content words that are
frequent but carry sense, such as ``well`` or ``right``, stay indexed.
"""

from __future__ import annotations

STOPWORDS: frozenset[str] = frozenset(
    """
    a an the this that these those some any each every either neither no nor not
    i me my mine myself we us our ours ourselves you your yours yourself yourselves
    he him his himself she her hers herself it its itself they them their theirs themselves
    who whom whose which what whatever whoever where when why how there here
    am is are was were be been being have has had having do does did doing done
    will would shall should can could may might must ought
    and or but if then else so than too very just only also as because while until although though
    of at by for with about against between into through during before after above below
    to from up down in out on off over under again further once
    all both few more most other such own same s t d ll m o re ve y
    don doesn didn isn aren wasn weren hasn haven hadn won wouldn shan shouldn can't cannot couldn
    mustn needn mightn let's that's there's here's what's who's it's i'm you're we're they're
    i've you've we've they've i'd you'd he'd she'd we'd they'd i'll you'll he'll she'll we'll they'll
    """.split()
)


def is_stopword(lowercase_form: str) -> bool:
    """Whether a lower-cased word form is a function word.

    Args:
        lowercase_form: the word, already lower-cased.

    Returns:
        True for a stop-word.
    """
    return lowercase_form.replace("\u2019", "'") in STOPWORDS
